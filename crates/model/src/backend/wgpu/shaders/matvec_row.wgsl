// Row `row` of weight K_ dotted with x (.x), and the sum of squares of x (.y, norm variant).
fn row_dotK_(row: u32, lane: u32, s: u32) -> vec2<f32> {
    let nq = p.cols / 4u;
    let rb = row * (p.cols / QBK_) * BWK_;
    var acc = vec2<f32>(0.0);
    // Every step of the loop is written out and branch-free: past the row's end a step reads
    // the last quad again and counts for nothing, so the tail is no serial loop either.
    let last = nq - 1u;
    for (var q = lane; q < nq; q += 8u * s) {
        let q0 = min(q + 0u * s, last);
        let q1 = min(q + 1u * s, last);
        let q2 = min(q + 2u * s, last);
        let q3 = min(q + 3u * s, last);
        let q4 = min(q + 4u * s, last);
        let q5 = min(q + 5u * s, last);
        let q6 = min(q + 6u * s, last);
        let q7 = min(q + 7u * s, last);
        let x0 = x[q0] * f32(q + 0u * s < nq);
        let x1 = x[q1] * f32(q + 1u * s < nq);
        let x2 = x[q2] * f32(q + 2u * s < nq);
        let x3 = x[q3] * f32(q + 3u * s < nq);
        let x4 = x[q4] * f32(q + 4u * s < nq);
        let x5 = x[q5] * f32(q + 5u * s < nq);
        let x6 = x[q6] * f32(q + 6u * s < nq);
        let x7 = x[q7] * f32(q + 7u * s < nq);
        let w0 = load_quadK_(rb + (4u * q0 / QBK_) * BWK_, (4u * q0) % QBK_);
        let w1 = load_quadK_(rb + (4u * q1 / QBK_) * BWK_, (4u * q1) % QBK_);
        let w2 = load_quadK_(rb + (4u * q2 / QBK_) * BWK_, (4u * q2) % QBK_);
        let w3 = load_quadK_(rb + (4u * q3 / QBK_) * BWK_, (4u * q3) % QBK_);
        let w4 = load_quadK_(rb + (4u * q4 / QBK_) * BWK_, (4u * q4) % QBK_);
        let w5 = load_quadK_(rb + (4u * q5 / QBK_) * BWK_, (4u * q5) % QBK_);
        let w6 = load_quadK_(rb + (4u * q6 / QBK_) * BWK_, (4u * q6) % QBK_);
        let w7 = load_quadK_(rb + (4u * q7 / QBK_) * BWK_, (4u * q7) % QBK_);
        let d0 = (dot(w0, xw(x0, q0)) + dot(w1, xw(x1, q1))) + (dot(w2, xw(x2, q2)) + dot(w3, xw(x3, q3)));
        let d1 = (dot(w4, xw(x4, q4)) + dot(w5, xw(x5, q5))) + (dot(w6, xw(x6, q6)) + dot(w7, xw(x7, q7)));
        let s0 = (sq(x0) + sq(x1)) + (sq(x2) + sq(x3));
        let s1 = (sq(x4) + sq(x5)) + (sq(x6) + sq(x7));
        acc += vec2<f32>(d0 + d1, s0 + s1);
    }
    return acc;
}
