// Workgroup sum of one value per invocation (64 invocations), through workgroup memory.
// Must be called in uniform control flow; every invocation gets the sum.
var<workgroup> red: array<f32, 64>;

fn reduce_sum(v: f32, lid: u32, sg_size: u32, sg_lane: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Workgroup maximum, as reduce_sum (a serial pass over the 64 values).
fn reduce_max(v: f32, lid: u32, sg_size: u32, sg_lane: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < 64u; i++) {
        r = max(r, red[i]);
    }
    workgroupBarrier();
    return r;
}
