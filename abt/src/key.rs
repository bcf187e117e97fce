//! ULT-local keys (`ABT_key`): a value per ULT, with an optional destructor run when the ULT ends.

use crate::context;
use crate::error::{Error, Result};
use crate::sync::{lock, StdArc};
use std::any::Any;
use std::marker::PhantomData;

/// A type-erased destructor, run on the value when its ULT ends.
pub(crate) type Destructor = StdArc<dyn Fn(Box<dyn Any + Send>) + Send + Sync>;

/// Key ids: a process-wide counter, never modelled (no protocol, only uniqueness).
static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A key (`ABT_key`): each ULT sees its own value of type `T`.
#[doc(alias = "ABT_key")]
pub struct Key<T> {
    id: u64,
    dtor: Option<Destructor>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Send + 'static> Key<T> {
    /// A key without destructor: values are simply dropped with their ULT (`ABT_key_create`).
    #[doc(alias = "ABT_key_create")]
    pub fn new() -> Self {
        Key {
            id: NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dtor: None,
            _t: PhantomData,
        }
    }
    /// A key whose `destructor` gets each ULT's value when that ULT ends.
    pub fn with_destructor(destructor: impl Fn(T) + Send + Sync + 'static) -> Self {
        let d: Destructor = StdArc::new(move |b: Box<dyn Any + Send>| {
            if let Ok(v) = b.downcast::<T>() {
                destructor(*v)
            }
        });
        Key {
            id: NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dtor: Some(d),
            _t: PhantomData,
        }
    }
    /// Sets the running ULT's value (`ABT_key_set`); `Error::NotInUlt` outside a ULT.
    #[doc(alias = "ABT_key_set")]
    #[doc(alias = "ABT_self_set_specific")]
    pub fn set(&self, v: T) -> Result<()> {
        let d = self.dtor.clone();
        context::with_current(|u| {
            u.has_keys.store(true, crate::sync::Ordering::Relaxed);
            let mut k = lock(&u.keys);
            k.retain(|(id, _, _)| *id != self.id);
            k.push((self.id, Box::new(v), d));
        })
        .ok_or(Error::NotInUlt)
    }
    /// Reads the running ULT's value through `f` (`ABT_key_get`).
    #[doc(alias = "ABT_key_get")]
    #[doc(alias = "ABT_self_get_specific")]
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> Result<R> {
        context::with_current(|u| {
            let k = lock(&u.keys);
            let v = k
                .iter()
                .find(|(id, _, _)| *id == self.id)
                .and_then(|(_, v, _)| v.downcast_ref::<T>());
            f(v)
        })
        .ok_or(Error::NotInUlt)
    }
}

impl<T: Send + 'static> Default for Key<T> {
    fn default() -> Self {
        Self::new()
    }
}
