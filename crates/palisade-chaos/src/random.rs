//! Where an injector's random samples come from: seeded for reproducible runs, or supplied.

/// A source of uniform samples in `[0, 1)`. The injector draws one per call while it is on
/// (whether the call is faulted) and one more for each latency fault with a range (where the
/// delay falls).
///
/// Any `FnMut() -> f64 + Send` closure is a source, so a test can script the samples:
///
/// ```
/// use palisade_chaos::RandomSource;
///
/// let mut samples = [0.25, 0.75].into_iter().cycle();
/// let mut source = move || samples.next().unwrap_or(0.0);
/// assert_eq!(source.sample(), 0.25);
/// assert_eq!(source.sample(), 0.75);
/// assert_eq!(source.sample(), 0.25);
/// ```
pub trait RandomSource: Send + 'static {
    /// The next sample, in `[0, 1)`.
    fn sample(&mut self) -> f64;
}

impl<F> RandomSource for F
where
    F: FnMut() -> f64 + Send + 'static,
{
    fn sample(&mut self) -> f64 {
        self()
    }
}

/// A small fast pseudo-random generator (wyrand): the same seed gives the same samples.
///
/// ```
/// use palisade_chaos::{RandomSource, SeededRandom};
///
/// let (mut a, mut b) = (SeededRandom::new(7), SeededRandom::new(7));
/// let x = a.sample();
/// assert!((0.0..1.0).contains(&x));
/// assert_eq!(x, b.sample());
/// ```
#[derive(Debug, Clone)]
pub struct SeededRandom {
    rng: fastrand::Rng,
}

impl SeededRandom {
    /// A generator seeded with `seed`.
    ///
    /// ```
    /// let _ = palisade_chaos::SeededRandom::new(42);
    /// ```
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A generator seeded from the operating system's entropy (what injectors use unless told
    /// otherwise).
    ///
    /// ```
    /// use palisade_chaos::{RandomSource, SeededRandom};
    /// let x = SeededRandom::from_entropy().sample();
    /// assert!((0.0..1.0).contains(&x));
    /// ```
    pub fn from_entropy() -> Self {
        Self {
            rng: fastrand::Rng::new(),
        }
    }
}

impl RandomSource for SeededRandom {
    fn sample(&mut self) -> f64 {
        self.rng.f64()
    }
}
