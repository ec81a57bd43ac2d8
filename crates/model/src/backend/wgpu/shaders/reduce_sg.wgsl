// Workgroup sum of one value per invocation (64 invocations): a subgroup sum, then one partial
// per subgroup through workgroup memory. Must be called in uniform control flow.
var<workgroup> red: array<f32, 64>;

fn reduce_sum(v: f32, lid: u32, sg_size: u32, sg_lane: u32) -> f32 {
    let s = subgroupAdd(v);
    if (sg_lane == 0u) {
        red[lid / sg_size] = s;
    }
    workgroupBarrier();
    var r = 0.0;
    let n_sg = (64u + sg_size - 1u) / sg_size;
    for (var i = 0u; i < n_sg; i++) {
        r += red[i];
    }
    workgroupBarrier();
    return r;
}

// Workgroup maximum, as reduce_sum.
fn reduce_max(v: f32, lid: u32, sg_size: u32, sg_lane: u32) -> f32 {
    let s = subgroupMax(v);
    if (sg_lane == 0u) {
        red[lid / sg_size] = s;
    }
    workgroupBarrier();
    var r = red[0];
    let n_sg = (64u + sg_size - 1u) / sg_size;
    for (var i = 1u; i < n_sg; i++) {
        r = max(r, red[i]);
    }
    workgroupBarrier();
    return r;
}
