// Where a position lives in one layer's KV cache, shared by kv_store.wgsl, rope_kv.wgsl and
// attention.wgsl. A layer's keys (and values) are rows of head_dim values:
// - a paged layer (kv_ring = 0) is one pool of kv_slots = n_blocks * 16 slots per KV head,
//   (n_head_kv, kv_slots, head_dim): position pos of sequence seq is in slot
//   table[seq * table_len + pos / 16] * 16 + pos % 16 (the sequence's block table);
// - a sliding-window layer keeps a ring of kv_ring slots per sequence, (n_seq, n_head_kv,
//   kv_ring, head_dim): position pos in slot pos % kv_ring.
// The including kernel's Params has n_head_kv, kv_ring, kv_slots and table_len, and it binds the
// block tables as `table: array<u32>` ((n_seq, table_len), KV_NONE where unmapped).

const KV_BLOCK: u32 = 16u;
const KV_NONE: u32 = 0xffffffffu;

// The pool block of position pos of sequence seq (KV_NONE where none is mapped). The table index
// is clamped to the tables (the host checks sequences and positions before a step).
fn kv_block(seq: u32, pos: u32) -> u32 {
    return table[min(seq * p.table_len + pos / KV_BLOCK, arrayLength(&table) - 1u)];
}

// The row of KV head kvh at position pos of sequence seq, for a store: KV_NONE where a paged
// layer has no block for it (the store is skipped).
fn kv_store_row(seq: u32, kvh: u32, pos: u32) -> u32 {
    if (p.kv_ring > 0u) {
        return (seq * p.n_head_kv + kvh) * p.kv_ring + pos % p.kv_ring;
    }
    let b = kv_block(seq, pos);
    if (b == KV_NONE) {
        return KV_NONE;
    }
    return kvh * p.kv_slots + b * KV_BLOCK + pos % KV_BLOCK;
}

// The row of KV head kvh at position pos of sequence seq, for a read: a position without a block
// (which the runner refuses before a step) reads the pool's last block rather than past it.
fn kv_read_row(seq: u32, kvh: u32, pos: u32) -> u32 {
    if (p.kv_ring > 0u) {
        return (seq * p.n_head_kv + kvh) * p.kv_ring + pos % p.kv_ring;
    }
    let b = min(kv_block(seq, pos), p.kv_slots / KV_BLOCK - 1u);
    return kvh * p.kv_slots + b * KV_BLOCK + pos % KV_BLOCK;
}
