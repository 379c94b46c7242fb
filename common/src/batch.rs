//! The deterministic generator behind `orders/batch_init`.
//!
//! Orders made by `batch_init` pick a random user and two random items. The choice comes from a
//! seeded generator defined here (SplitMix64, written out so that no crate upgrade can change it),
//! and the log records only the seed: the order service and the log replay call the same
//! [`batch_orders`] and therefore rebuild exactly the same orders.

/// SplitMix64: small, fast, and fully specified.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One order made by `batch_init`: its user and its two items (quantity 1 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOrder {
    /// The user, in `0..n_users`.
    pub user: u64,
    /// The two items, each in `0..n_items`.
    pub items: [u64; 2],
}

/// The `n` orders `batch_init(n, n_items, n_users, _)` makes with `seed`; order `i` gets id `"i"`.
pub fn batch_orders(
    seed: u64,
    n: u64,
    n_items: u64,
    n_users: u64,
) -> impl Iterator<Item = BatchOrder> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(move |_| BatchOrder {
        user: rng.below(n_users.max(1)),
        items: [rng.below(n_items.max(1)), rng.below(n_items.max(1))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_orders() {
        let a: Vec<_> = batch_orders(7, 1000, 10, 5).collect();
        let b: Vec<_> = batch_orders(7, 1000, 10, 5).collect();
        assert_eq!(a, b);
        assert!(a
            .iter()
            .all(|o| o.user < 5 && o.items.iter().all(|i| *i < 10)));
        let c: Vec<_> = batch_orders(8, 1000, 10, 5).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation by S. Vigna).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
