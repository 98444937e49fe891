//! [`Ring`]: a fixed-capacity ring buffer, allocated once, overwriting its oldest item.

/// The last `capacity` items pushed, oldest first. The buffer is allocated at creation and
/// never grows: memory is `capacity × size_of::<T>()` from the first push to the last.
#[derive(Debug, Clone)]
pub(crate) struct Ring<T> {
    buf: Vec<T>,
    /// Where the next push goes once the buffer is full (the oldest item).
    next: usize,
    capacity: usize,
}

impl<T: Copy> Ring<T> {
    /// An empty ring of `capacity` items (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            buf: Vec::with_capacity(capacity),
            next: 0,
            capacity,
        }
    }

    /// Adds `item`, dropping the oldest when full.
    pub(crate) fn push(&mut self, item: T) {
        if self.buf.len() < self.capacity {
            self.buf.push(item);
            return;
        }
        if let Some(slot) = self.buf.get_mut(self.next) {
            *slot = item;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// The items, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        let (newer, older) = self.buf.split_at(self.next.min(self.buf.len()));
        older.iter().chain(newer.iter())
    }

    /// The newest item.
    pub(crate) fn last(&self) -> Option<&T> {
        self.iter().next_back()
    }

    /// Items held now.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes the buffer holds (allocated at creation).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity() * std::mem::size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    fn items(r: &Ring<u32>) -> Vec<u32> {
        r.iter().copied().collect()
    }

    #[test]
    fn keeps_the_last_capacity_items_oldest_first() {
        let mut r = Ring::new(3);
        assert_eq!(items(&r), Vec::<u32>::new());
        assert_eq!(r.last(), None);
        r.push(1);
        r.push(2);
        assert_eq!(items(&r), [1, 2]);
        r.push(3);
        assert_eq!(items(&r), [1, 2, 3]);
        r.push(4);
        assert_eq!(items(&r), [2, 3, 4]);
        assert_eq!(r.last(), Some(&4));
        for i in 5..=11 {
            r.push(i);
        }
        assert_eq!(items(&r), [9, 10, 11]);
        assert_eq!(r.iter().rev().copied().collect::<Vec<_>>(), [11, 10, 9]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn never_grows_past_its_capacity() {
        let mut r = Ring::new(900);
        let bytes = r.heap_bytes();
        assert!(bytes >= 900 * 4);
        for i in 0..10_000 {
            r.push(i);
        }
        assert_eq!(r.len(), 900);
        assert_eq!(r.heap_bytes(), bytes, "allocated once");
        assert_eq!(r.iter().next(), Some(&9_100));
    }

    #[test]
    fn a_zero_capacity_holds_one() {
        let mut r = Ring::new(0);
        r.push(1);
        r.push(2);
        assert_eq!(items(&r), [2]);
    }
}
