//! Peak memory of the hostile chat templates, run one after another in this process (alone
//! in its test binary, so nothing else adds to the peak).

mod hostile_templates;

/// Peak resident memory of this process so far (`VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

#[test]
fn hostile_templates_stay_under_512_mib() {
    for case in hostile_templates::cases() {
        hostile_templates::check(&case);
        eprintln!("{:>5} MiB after {}", peak_rss() >> 20, case.name);
    }
    let peak = peak_rss();
    eprintln!("peak RSS {} MiB", peak >> 20);
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
}
