//! The KV cache's block pool, as the scheduler sees it: which blocks are free, which sequences
//! hold each block (reference counts), and the prefix cache: a full block is keyed by its tokens
//! and its parent block's key, so a sequence whose prompt starts with the same tokens maps the
//! same blocks instead of computing them again. Unreferenced cached blocks stay until the pool
//! needs them, the least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use rustorch_model::KV_BLOCK;

/// A full block's prefix key: its tokens and its parent's key.
pub type BlockKey = u64;

/// The key of the block holding `tokens` (a whole block) after the block keyed `parent` (0 for
/// the first block of a sequence).
pub fn block_key(parent: BlockKey, tokens: &[u32]) -> BlockKey {
    debug_assert_eq!(tokens.len(), KV_BLOCK);
    // SipHash with fixed keys: the same key in every run. A collision cannot mix up prompts:
    // a hit is checked against the block's tokens and parent.
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    // 0 is the root's key.
    h.finish().max(1)
}

/// What a cached block holds, to check a key's hit.
struct Cached {
    key: BlockKey,
    parent: BlockKey,
    tokens: [u32; KV_BLOCK],
}

/// The pool's blocks and the prefix cache.
pub struct BlockPool {
    /// Sequences holding each block.
    refs: Vec<u32>,
    /// Blocks neither held nor cached.
    free: Vec<u32>,
    /// Each block's prefix entry, if it is cached.
    entry: Vec<Option<Cached>>,
    /// Cached blocks by key.
    by_key: HashMap<BlockKey, u32>,
    /// Cached blocks no sequence holds, by when they were last released (oldest first).
    idle: BTreeMap<u64, u32>,
    /// When each idle block was released (its key in `idle`).
    idle_at: Vec<u64>,
    clock: u64,
    /// Prefix-cache lookups that found a block, and those that did not.
    pub hits: u64,
    pub misses: u64,
}

impl BlockPool {
    pub fn new(n_blocks: usize) -> BlockPool {
        BlockPool {
            refs: vec![0; n_blocks],
            free: (0..n_blocks as u32).rev().collect(),
            entry: (0..n_blocks).map(|_| None).collect(),
            by_key: HashMap::new(),
            idle: BTreeMap::new(),
            idle_at: vec![0; n_blocks],
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a sequence could take now: the free ones and the cached ones no sequence holds.
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// Blocks held by at least one sequence.
    pub fn used(&self) -> usize {
        self.n_blocks() - self.available()
    }

    /// Blocks in the prefix cache (held or not).
    pub fn cached(&self) -> usize {
        self.by_key.len()
    }

    /// Sequences holding block `b`.
    pub fn refs(&self, b: u32) -> u32 {
        self.refs[b as usize]
    }

    /// Takes a block for one sequence: a free one, else the least recently used cached one
    /// (which leaves the prefix cache).
    pub fn alloc(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.idle.pop_first()?;
                let e = self.entry[b as usize]
                    .take()
                    .expect("idle blocks are cached");
                self.by_key.remove(&e.key);
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// A sequence lets go of block `b`: unheld, it becomes free, or idle if it is cached.
    pub fn release(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        assert!(*r > 0, "block {b} released more often than taken");
        *r -= 1;
        if *r == 0 {
            if self.entry[b as usize].is_some() {
                self.clock += 1;
                self.idle.insert(self.clock, b);
                self.idle_at[b as usize] = self.clock;
            } else {
                self.free.push(b);
            }
        }
    }

    /// The cached block holding `tokens` after the block keyed `parent`, now also held by the
    /// caller; counts a hit or a miss.
    pub fn lookup(&mut self, parent: BlockKey, tokens: &[u32]) -> Option<(u32, BlockKey)> {
        let key = block_key(parent, tokens);
        let found = self.by_key.get(&key).copied().filter(|&b| {
            let e = self.entry[b as usize]
                .as_ref()
                .expect("keyed blocks are cached");
            e.parent == parent && e.tokens == tokens
        });
        let Some(b) = found else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        if self.refs[b as usize] == 0 {
            self.idle.remove(&self.idle_at[b as usize]);
        }
        self.refs[b as usize] += 1;
        Some((b, key))
    }

    /// Enters block `b` (held, now full with `tokens` after the block keyed `parent`) in the
    /// prefix cache, unless that key is already cached; returns its key.
    pub fn register(&mut self, b: u32, parent: BlockKey, tokens: &[u32]) -> BlockKey {
        let key = block_key(parent, tokens);
        if self.entry[b as usize].is_none() && !self.by_key.contains_key(&key) {
            self.by_key.insert(key, b);
            self.entry[b as usize] = Some(Cached {
                key,
                parent,
                tokens: tokens.try_into().expect("a whole block"),
            });
        }
        key
    }

    /// Empties the prefix cache of blocks no sequence holds (they become free).
    pub fn clear_idle(&mut self) {
        while let Some((_, b)) = self.idle.pop_first() {
            let e = self.entry[b as usize]
                .take()
                .expect("idle blocks are cached");
            self.by_key.remove(&e.key);
            self.free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u32) -> Vec<u32> {
        (0..KV_BLOCK as u32).map(|i| seed * 100 + i).collect()
    }

    #[test]
    fn alloc_release_and_the_prefix_cache() {
        let mut p = BlockPool::new(3);
        let a = p.alloc().unwrap();
        let key_a = p.register(a, 0, &block(1));
        let b = p.alloc().unwrap();
        assert_eq!((p.used(), p.available(), p.cached()), (2, 1, 1));
        // A second sequence with the same first block shares it.
        assert_eq!(p.lookup(0, &block(1)), Some((a, key_a)));
        assert_eq!(p.refs(a), 2);
        // Same tokens after another parent, or other tokens: misses.
        assert_eq!(p.lookup(key_a, &block(1)), None);
        assert_eq!(p.lookup(0, &block(2)), None);
        assert_eq!((p.hits, p.misses), (1, 2));
        p.release(a);
        p.release(a);
        p.release(b);
        // a stays cached but idle; b is free.
        assert_eq!((p.used(), p.available(), p.cached()), (0, 3, 1));
        // The pool runs out of free blocks, then takes the idle cached one.
        let c = p.alloc().unwrap();
        let d = p.alloc().unwrap();
        assert_ne!(c, a);
        assert_ne!(d, a);
        let e = p.alloc().unwrap();
        assert_eq!(e, a);
        assert_eq!(p.cached(), 0);
        assert_eq!(p.alloc(), None);
        assert_eq!(p.lookup(0, &block(1)), None);
    }

    #[test]
    fn idle_blocks_leave_least_recently_used_first() {
        let mut p = BlockPool::new(3);
        let ids: Vec<u32> = (0..3).map(|_| p.alloc().unwrap()).collect();
        for (i, &b) in ids.iter().enumerate() {
            p.register(b, 0, &block(i as u32));
        }
        // Released in the order 2, 0, 1: evicted in that order.
        for &i in &[2, 0, 1] {
            p.release(ids[i]);
        }
        // A hit on block 0 holds it again: it cannot be evicted.
        assert!(p.lookup(0, &block(0)).is_some());
        assert_eq!(p.alloc(), Some(ids[2]));
        assert_eq!(p.alloc(), Some(ids[1]));
        assert_eq!(p.alloc(), None);
    }
}
