// The cooperative-matrix operations of matmul_coop.wgsl done by each invocation, for adapters
// without them (lavapipe in the tests): the same f16 inputs, f32 sums and memory layouts as
// coop_hw.wgsl. An input matrix is its offset in wt / xt; a sum matrix is spread over the
// subgroup's 32 lanes, S * S / 32 consecutive elements (row-major) each.
const EL: u32 = S * S / 32u;

alias MatB = u32;

struct MatC {
    v: array<f32, EL>,
}

fn mma_zero(lane: u32) -> MatC {
    return MatC();
}

fn mma_a(o: u32) -> u32 {
    return o;
}

fn mma_b(o: u32) -> u32 {
    return o;
}

// Element (i, j) of the sums: row i of the weights' matrix (at a in wt, WS a row) times token j
// of the activations' (at b in xt, WS a token).
fn mma(a: u32, b: u32, c: MatC, lane: u32) -> MatC {
    var d = c;
    for (var u = 0u; u < EL; u++) {
        let e = lane * EL + u;
        let i = e / S;
        let j = e % S;
        var s = 0.0;
        for (var k = 0u; k < S; k++) {
            s += f32(wt[a + i * WS + k]) * f32(xt[b + j * WS + k]);
        }
        d.v[u] += s;
    }
    return d;
}

fn mma_store(c: MatC, o: u32, lane: u32) {
    for (var u = 0u; u < EL; u++) {
        let e = lane * EL + u;
        ct[o + (e % S) * CS + e / S] = c.v[u];
    }
}
