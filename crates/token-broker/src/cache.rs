//! The broker's bounded in-memory caches (verified tokens, authorizations): `quick_cache`, whose
//! entries cost little more than their key and value, so that 100 000 callers fit in tens of
//! megabytes.

use std::hash::Hash;

/// A cache of at most `capacity` entries. Memory grows with use: tables are sized for a few
/// thousand entries first, whatever the bound.
pub fn bounded<K: Eq + Hash, V: Clone>(capacity: u64) -> quick_cache::sync::Cache<K, V> {
    let first = usize::try_from(capacity.min(4096)).unwrap_or(4096);
    quick_cache::sync::Cache::with_weighter(first, capacity, quick_cache::UnitWeighter)
}
