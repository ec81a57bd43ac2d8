// The cooperative-matrix operations of matmul_coop.wgsl, by the hardware (the adapter's
// `EXPERIMENTAL_COOPERATIVE_MATRIX` with an S x S x S configuration of f16 inputs and f32 sums).
// A matrix of weights is read row by row from wt (a row's S columns consecutive), one of
// activations token by token from xt; sums are stored token by token to ct. (The module begins
// with `enable wgpu_cooperative_matrix;`: shaders::matmul_coop puts it there.)

alias MatC = coop_mat{S}x{S}<f32, C>;
alias MatB = coop_mat{S}x{S}<f16, B>;

fn mma_zero(lane: u32) -> MatC {
    return coopLoad<MatC>(&ct[0], CS);
}

fn mma_a(o: u32) -> coop_mat{S}x{S}<f16, A> {
    return coopLoadT<coop_mat{S}x{S}<f16, A>>(&wt[o], WS);
}

fn mma_b(o: u32) -> MatB {
    return coopLoad<MatB>(&xt[o], WS);
}

fn mma(a: coop_mat{S}x{S}<f16, A>, b: MatB, c: MatC, lane: u32) -> MatC {
    return coopMultiplyAdd(a, b, c);
}

fn mma_store(c: MatC, o: u32, lane: u32) {
    coopStore(c, &ct[o], CS);
}
