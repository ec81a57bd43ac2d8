// Gate and up rows (mode 2, weights 0 and 1 with rows0 rows each) dotted with x: (gate, up, sum
// of squares of x).
fn row_dot_gu(row: u32, lane: u32, s: u32) -> vec3<f32> {
    let nq = p.cols / 4u;
    let rb0 = row * (p.cols / QB0) * BW0;
    let rb1 = row * (p.cols / QB1) * BW1;
    var acc = vec3<f32>(0.0);
    // Written out and branch-free as in matvec_row.wgsl: past the end a step counts for nothing.
    let last = nq - 1u;
    for (var q = lane; q < nq; q += 4u * s) {
        let q0 = min(q, last);
        let q1 = min(q + s, last);
        let q2 = min(q + 2u * s, last);
        let q3 = min(q + 3u * s, last);
        let x0 = x[q0] * f32(q < nq);
        let x1 = x[q1] * f32(q + s < nq);
        let x2 = x[q2] * f32(q + 2u * s < nq);
        let x3 = x[q3] * f32(q + 3u * s < nq);
        let g0 = load_quad0(rb0 + (4u * q0 / QB0) * BW0, (4u * q0) % QB0);
        let g1 = load_quad0(rb0 + (4u * q1 / QB0) * BW0, (4u * q1) % QB0);
        let g2 = load_quad0(rb0 + (4u * q2 / QB0) * BW0, (4u * q2) % QB0);
        let g3 = load_quad0(rb0 + (4u * q3 / QB0) * BW0, (4u * q3) % QB0);
        let u0 = load_quad1(rb1 + (4u * q0 / QB1) * BW1, (4u * q0) % QB1);
        let u1 = load_quad1(rb1 + (4u * q1 / QB1) * BW1, (4u * q1) % QB1);
        let u2 = load_quad1(rb1 + (4u * q2 / QB1) * BW1, (4u * q2) % QB1);
        let u3 = load_quad1(rb1 + (4u * q3 / QB1) * BW1, (4u * q3) % QB1);
        let y0 = xw(x0, q0);
        let y1 = xw(x1, q1);
        let y2 = xw(x2, q2);
        let y3 = xw(x3, q3);
        let g = (dot(g0, y0) + dot(g1, y1)) + (dot(g2, y2) + dot(g3, y3));
        let u = (dot(u0, y0) + dot(u1, y1)) + (dot(u2, y2) + dot(u3, y3));
        acc += vec3<f32>(g, u, (sq(x0) + sq(x1)) + (sq(x2) + sq(x3)));
    }
    return acc;
}
