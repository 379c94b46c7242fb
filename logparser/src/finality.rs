//! The sagas the archiving pass has already seen final, so that it asks order-db once per saga
//! instead of once per log.
//!
//! A saga's entries sit in three logs: `log:order`, `log:stock` and `log:payment`. Before an
//! entry may leave, the pass checks that its saga is final (`HGET <saga record> done`). The
//! retirement queue checks a saga when its `log:order` entries have been handled, seconds after it
//! ended; its `log:stock` and `log:payment` entries are archived one `LOG_RETAIN` later, and
//! asked the same question again: 2.4 `HGET`s more per checkout on order-db
//! (docs/BENCHMARKS.md). Finality never goes back (a decision is taken once, a record leaves only
//! when final), so an answer "final" may be remembered for as long as memory allows.
//!
//! The set is bounded: two generations of at most `per_generation` ids each. When the newer one
//! is full it becomes the older one and the oldest ids are forgotten. A forgotten saga is only
//! asked about again.

use std::collections::HashSet;
use std::sync::Mutex;

/// Saga ids seen final, newest first, at most two generations of `per_generation` each.
#[derive(Debug)]
pub struct FinalSagas {
    per_generation: usize,
    gens: Mutex<[HashSet<u128>; 2]>,
}

/// Ids kept per generation by default: two generations at ~2,300 checkouts/s cover about
/// three minutes, more than the default `LOG_RETAIN`, in ~12 MB.
pub const PER_GENERATION: usize = 250_000;

impl Default for FinalSagas {
    fn default() -> Self {
        FinalSagas::new(PER_GENERATION)
    }
}

impl FinalSagas {
    /// An empty set keeping at most `2 × per_generation` ids.
    pub fn new(per_generation: usize) -> FinalSagas {
        FinalSagas {
            per_generation: per_generation.max(1),
            gens: Mutex::new([HashSet::new(), HashSet::new()]),
        }
    }

    /// Whether saga `sid` was noted final (and not forgotten since).
    pub fn contains(&self, sid: &str) -> bool {
        let Some(id) = key(sid) else {
            return false;
        };
        let gens = self.gens.lock().unwrap_or_else(|p| p.into_inner());
        gens.iter().any(|g| g.contains(&id))
    }

    /// Notes that saga `sid` is final. A saga id that is not a ULID is not noted (it is asked
    /// about every time, as before).
    pub fn insert(&self, sid: &str) {
        let Some(id) = key(sid) else {
            return;
        };
        let mut gens = self.gens.lock().unwrap_or_else(|p| p.into_inner());
        if gens[1].contains(&id) {
            return;
        }
        if gens[0].len() >= self.per_generation {
            let newer = std::mem::take(&mut gens[0]);
            gens[1] = newer;
        }
        gens[0].insert(id);
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        let gens = self.gens.lock().unwrap_or_else(|p| p.into_inner());
        gens[0].len() + gens[1].len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A saga id as a number: saga ids are ULIDs, 16 bytes instead of a 26-character string.
fn key(sid: &str) -> Option<u128> {
    ulid::Ulid::from_string(sid).ok().map(u128::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u128) -> String {
        ulid::Ulid::from(n).to_string()
    }

    #[test]
    fn remembers_what_it_was_told() {
        let f = FinalSagas::new(10);
        assert!(!f.contains(&sid(1)));
        f.insert(&sid(1));
        assert!(f.contains(&sid(1)));
        assert!(!f.contains(&sid(2)));
    }

    #[test]
    fn ids_that_are_not_ulids_are_never_taken_as_final() {
        let f = FinalSagas::new(10);
        f.insert("not-a-ulid");
        assert!(!f.contains("not-a-ulid"));
        assert!(f.is_empty());
    }

    #[test]
    fn holds_two_generations_and_forgets_the_oldest() {
        let f = FinalSagas::new(3);
        for n in 0..3 {
            f.insert(&sid(n));
        }
        // The fourth starts a new generation: the first three are still held.
        f.insert(&sid(3));
        assert!((0..4).all(|n| f.contains(&sid(n))));
        for n in 4..6 {
            f.insert(&sid(n));
        }
        // The seventh starts a third generation: the first one (0, 1, 2) is forgotten.
        f.insert(&sid(6));
        assert!((0..3).all(|n| !f.contains(&sid(n))));
        assert!((3..7).all(|n| f.contains(&sid(n))));
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn an_id_in_the_older_generation_is_not_noted_twice() {
        let f = FinalSagas::new(2);
        f.insert(&sid(0));
        f.insert(&sid(1));
        f.insert(&sid(2)); // 0 and 1 are now the older generation
        f.insert(&sid(0));
        assert_eq!(f.len(), 3);
    }
}
