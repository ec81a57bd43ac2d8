// Row `row` of weight K_ dotted with x (.x), and the sum of squares of x (.y, norm variant).
fn row_dotK_(row: u32, lane: u32, s: u32) -> vec2<f32> {
    let nq = p.cols / 4u;
    let rb = row * (p.cols / QBK_) * BWK_;
    var acc = vec2<f32>(0.0);
    var q = lane;
    for (; q + 3u * s < nq; q += 4u * s) {
        let q1 = q + s;
        let q2 = q + 2u * s;
        let q3 = q + 3u * s;
        let x0 = x[q];
        let x1 = x[q1];
        let x2 = x[q2];
        let x3 = x[q3];
        let a = load_quadK_(rb + (4u * q / QBK_) * BWK_, (4u * q) % QBK_);
        let b = load_quadK_(rb + (4u * q1 / QBK_) * BWK_, (4u * q1) % QBK_);
        let c = load_quadK_(rb + (4u * q2 / QBK_) * BWK_, (4u * q2) % QBK_);
        let d = load_quadK_(rb + (4u * q3 / QBK_) * BWK_, (4u * q3) % QBK_);
        let dots = (dot(a, xw(x0, q)) + dot(b, xw(x1, q1))) + (dot(c, xw(x2, q2)) + dot(d, xw(x3, q3)));
        acc += vec2<f32>(dots, (sq(x0) + sq(x1)) + (sq(x2) + sq(x3)));
    }
    for (; q < nq; q += s) {
        let x0 = x[q];
        acc += vec2<f32>(dot(load_quadK_(rb + (4u * q / QBK_) * BWK_, (4u * q) % QBK_), xw(x0, q)), sq(x0));
    }
    return acc;
}
