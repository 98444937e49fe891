//! Which requests the tower layer may hedge.

/// Says whether a request may be sent twice: only those are hedged by
/// `HedgeLayer` (feature `tower`). Any `Fn(&Req) -> bool` is one.
///
/// ```
/// use palisade_toolbox::hedge::Idempotent;
///
/// #[derive(Clone)]
/// enum Rpc { Get(String), Put(String, Vec<u8>) }
/// let reads = |r: &Rpc| matches!(r, Rpc::Get(_));
/// assert!(reads.is_idempotent(&Rpc::Get("k".into())));
/// assert!(!reads.is_idempotent(&Rpc::Put("k".into(), vec![])));
/// ```
pub trait Idempotent<Req> {
    /// Whether `request` may be sent twice.
    fn is_idempotent(&self, request: &Req) -> bool;
}

impl<Req, F> Idempotent<Req> for F
where
    F: Fn(&Req) -> bool,
{
    #[inline]
    fn is_idempotent(&self, request: &Req) -> bool {
        self(request)
    }
}

/// Every request may be sent twice (a read-only service). Say so explicitly: the layer has no
/// default.
///
/// ```
/// use palisade_toolbox::hedge::{AllIdempotent, Idempotent};
///
/// assert!(AllIdempotent.is_idempotent(&"GET /"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllIdempotent;

impl<Req> Idempotent<Req> for AllIdempotent {
    #[inline]
    fn is_idempotent(&self, _: &Req) -> bool {
        true
    }
}

/// HTTP requests whose method is idempotent by RFC 9110 §9.2.2: `GET`, `HEAD`, `OPTIONS`,
/// `TRACE`, `PUT`, `DELETE` (crate feature `http`). `POST` and `PATCH` are never hedged.
///
/// ```
/// use palisade_toolbox::hedge::{Idempotent, IdempotentMethods};
///
/// let get = http::Request::get("/items").body(()).unwrap();
/// let post = http::Request::post("/orders").body(()).unwrap();
/// assert!(IdempotentMethods.is_idempotent(&get));
/// assert!(!IdempotentMethods.is_idempotent(&post));
/// ```
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdempotentMethods;

#[cfg(feature = "http")]
impl<B> Idempotent<http::Request<B>> for IdempotentMethods {
    fn is_idempotent(&self, request: &http::Request<B>) -> bool {
        use http::Method;
        matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
    }
}
