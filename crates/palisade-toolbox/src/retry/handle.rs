//! How a tower response future reaches its component: an `Arc` clone per call, or a
//! `&'static` (a component that lives for the whole process: no reference count per call).

use std::ops::Deref;
use std::sync::Arc;

/// A component handle as a layer holds it.
#[derive(Debug)]
pub(crate) enum LayerHandle<C: 'static> {
    Owned(C),
    Static(&'static C),
}

impl<C: Clone> Clone for LayerHandle<C> {
    fn clone(&self) -> Self {
        match self {
            LayerHandle::Owned(c) => LayerHandle::Owned(c.clone()),
            LayerHandle::Static(c) => LayerHandle::Static(c),
        }
    }
}

impl<C> Deref for LayerHandle<C> {
    type Target = C;

    #[inline]
    fn deref(&self) -> &C {
        match self {
            LayerHandle::Owned(c) => c,
            LayerHandle::Static(c) => c,
        }
    }
}

/// A component's shared state as a response future holds it.
pub(crate) enum Handle<T: 'static> {
    Shared(Arc<T>),
    Static(&'static T),
}

impl<T> Deref for Handle<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match self {
            Handle::Shared(a) => a,
            Handle::Static(t) => t,
        }
    }
}
