//! Typed arenas and handles: the storage of the IR.
//!
//! Every kind of IR entity lives in an [`Arena`] and is referred to by a [`Handle`], a `Copy` index
//! that carries the entity's type, so a node handle can never be used where a value is expected.
//! Analyses keep their results in a [`SecondaryMap`] keyed by the same handles.

use std::fmt;
use std::marker::PhantomData;

/// A typed index into an [`Arena<T>`].
pub struct Handle<T> {
    index: u32,
    marker: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    /// The handle of the `index`-th entity of an arena.
    pub fn from_index(index: usize) -> Self {
        let index = u32::try_from(index).expect("an arena holds at most u32::MAX entities");
        Handle {
            index,
            marker: PhantomData,
        }
    }

    /// The position of the entity in its arena.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<T> Eq for Handle<T> {}
impl<T> PartialOrd for Handle<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Handle<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index.cmp(&other.index)
    }
}
impl<T> std::hash::Hash for Handle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}
impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.index)
    }
}

/// Append-only storage of entities of one kind.
pub struct Arena<T> {
    items: Vec<T>,
}

impl<T> Arena<T> {
    /// An empty arena.
    pub fn new() -> Self {
        Arena { items: Vec::new() }
    }

    /// Stores `item` and returns its handle.
    pub fn push(&mut self, item: T) -> Handle<T> {
        let handle = Handle::from_index(self.items.len());
        self.items.push(item);
        handle
    }

    /// The number of entities.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the arena holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether `handle` points into this arena.
    pub fn contains(&self, handle: Handle<T>) -> bool {
        handle.index() < self.items.len()
    }

    /// The entity behind `handle`, if it is in bounds.
    pub fn get(&self, handle: Handle<T>) -> Option<&T> {
        self.items.get(handle.index())
    }

    /// Handles and entities in the order they were pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Handle<T>, &T)> + '_ {
        self.items
            .iter()
            .enumerate()
            .map(|(index, item)| (Handle::from_index(index), item))
    }

    /// All handles, in the order they were pushed.
    pub fn handles(&self) -> impl ExactSizeIterator<Item = Handle<T>> + use<T> {
        (0..self.items.len()).map(Handle::from_index)
    }
}

impl<T: Clone> Clone for Arena<T> {
    fn clone(&self) -> Self {
        Arena {
            items: self.items.clone(),
        }
    }
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for Arena<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> std::ops::Index<Handle<T>> for Arena<T> {
    type Output = T;
    fn index(&self, handle: Handle<T>) -> &T {
        &self.items[handle.index()]
    }
}

impl<T> std::ops::IndexMut<Handle<T>> for Arena<T> {
    fn index_mut(&mut self, handle: Handle<T>) -> &mut T {
        &mut self.items[handle.index()]
    }
}

/// A side table with one `V` per entity of an arena, for analyses keyed by handle.
#[derive(Clone, Debug)]
pub struct SecondaryMap<K, V> {
    items: Vec<V>,
    marker: PhantomData<fn(K)>,
}

impl<T, V: Clone> SecondaryMap<Handle<T>, V> {
    /// A table with `default` for each of `len` entities.
    pub fn with_default(len: usize, default: V) -> Self {
        SecondaryMap {
            items: vec![default; len],
            marker: PhantomData,
        }
    }

    /// Sets the entry of `handle`, growing the table with `fill` if needed.
    pub fn insert(&mut self, handle: Handle<T>, value: V, fill: V) {
        if self.items.len() <= handle.index() {
            self.items.resize(handle.index() + 1, fill);
        }
        self.items[handle.index()] = value;
    }

    /// The entry of `handle`, if the table reaches that far.
    pub fn get(&self, handle: Handle<T>) -> Option<&V> {
        self.items.get(handle.index())
    }
}

impl<T, V> std::ops::Index<Handle<T>> for SecondaryMap<Handle<T>, V> {
    type Output = V;
    fn index(&self, handle: Handle<T>) -> &V {
        &self.items[handle.index()]
    }
}

impl<T, V> std::ops::IndexMut<Handle<T>> for SecondaryMap<Handle<T>, V> {
    fn index_mut(&mut self, handle: Handle<T>) -> &mut V {
        &mut self.items[handle.index()]
    }
}
