//! The wgpu device and the op recorder: pipelines, cached bind groups, per-op parameters in one
//! uniform buffer, one submission per step, and reads back to the host with a time limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shaders::{self, MvShape};
use crate::backend::Device;
use crate::ModelError;

/// Parameter slots of one submission; a step of a 32-layer model records about 500 ops.
const MAX_SLOTS: u32 = 2048;
/// Ops per submission by default (an eighth, a quarter and a half of that for a step's first
/// three): the GPU starts on the first ones while the host records and encodes the rest of the
/// step (BENCHMARKS.md has the figures for other sizes and for one submission a step).
const SUBMIT_EVERY: usize = 32;
/// Storage buffers one op binds at most (the decode mat-vec with the RMSNorm folded in).
pub(crate) const MAX_BINDS: usize = 10;
/// Tokens from which prompt matmuls are tiled by default ([`Options::tile_min`]).
const TILE_MIN: usize = 16;
/// Bytes of one op's parameters (16 words).
const PARAM_BYTES: u64 = 64;

/// How the backend picks and uses its adapter.
#[derive(Debug, Clone)]
pub struct Options {
    /// Use subgroup operations where the adapter offers them (else workgroup memory only).
    pub subgroups: bool,
    /// Pick the first adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Longest wait for the GPU to finish one submission.
    pub timeout: Duration,
    /// Submit after this many ops (0: once per step, when a result is read; default
    /// [`SUBMIT_EVERY`]), ramped up at a step's start (after an eighth, a quarter, a half of it):
    /// the GPU starts while the rest of the step is being recorded.
    pub submit_every: usize,
    /// Print where the host's time went (recording, encoding, submitting, waiting) at exit, and,
    /// where the adapter has timestamp queries, the GPU time of each kernel (every dispatch then
    /// runs in its own compute pass, and each submission is waited for).
    pub profile: bool,
    /// With `profile`: stamp each compute pass as recorded instead of splitting every dispatch
    /// into its own (`RUSTORCH_WGPU_PROFILE=pass`): the GPU time of whole steps, unperturbed.
    pub profile_passes: bool,
    /// Decode matmuls through the mat-vec kernel (where the adapter has subgroups); off: the
    /// one-workgroup-per-row kernel the prompt uses.
    pub matvec: bool,
    /// With `matvec`: the workgroup shape of each kind of decode mat-vec (see
    /// [`MvShapes::parse`]).
    pub matvec_shapes: MvShapes,
    /// Matmuls over this many tokens or more go through the tiled kernel (`matmul_tile.wgsl`,
    /// 64 rows x 64 tokens a workgroup); fewer through `matmul.wgsl` (8 tokens a workgroup).
    /// 0: never tiled.
    pub tile_min: usize,
    /// Prompt attention over this many rows or more by tiles of query rows
    /// (`attention_tile.wgsl`); fewer, a workgroup per (head, row). 0: never tiled.
    pub attn_tile_min: usize,
    /// An f16 KV cache where the adapter has `shader-f16` (as the CPU and CUDA backends keep);
    /// off, or without the feature: f32.
    pub kv_f16: bool,
    /// f16 tiles in the tiled matmul where the adapter has `shader-f16` (off by default: not yet
    /// measured on a GPU, and its rounding makes a prompt row's values depend on whether its step
    /// had enough rows to be tiled, where f32 tiles change only the last bits).
    pub f16: bool,
    /// The decode mat-vec over 8-bit activations (`quantize_q8.wgsl`, packed 8-bit dot
    /// products) where every weight of a dispatch is Q4_K or Q6_K. Off by default: not yet
    /// measured on a GPU.
    pub q8: bool,
    /// The tiled matmul loads the next step's weights and activations before this step's sums
    /// (`matmul_tile.wgsl`'s PREFETCH). Off by default: not yet measured on a GPU.
    pub tile_prefetch: bool,
    /// How the tiled matmul multiplies its tiles: `CoopMode::Off` (f32 or f16 sums by each
    /// invocation, `matmul_tile.wgsl`), `On` (cooperative matrices, `matmul_coop.wgsl`, where the
    /// adapter has them with f16 inputs and f32 sums, subgroups of 32 and the workgroup memory;
    /// else off), or `Emulated(16 or 8)` (`matmul_coop.wgsl`'s arithmetic for matrices of that size
    /// without the hardware's, where the adapter has `shader-f16`: for the tests).
    /// Off by default: not yet measured on a GPU.
    pub coop: CoopMode,
    /// Keep naga's run-time checks in the shaders (index clamping, loop bounding); off by default,
    /// see [`Context::pipe`].
    pub checked: bool,
    /// Bytes a weight's buffer holds at most (`None`: as many as the adapter lets a kernel bind).
    /// A matrix larger than that is uploaded as several parts of whole rows, each multiplied by a
    /// dispatch of its own; a lower figure than the adapter's runs that path on any adapter.
    pub max_binding: Option<u64>,
}

/// See [`Options::coop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoopMode {
    Off,
    On,
    /// Emulated matrices of this size (16 or 8).
    Emulated(u32),
}

/// Bytes of workgroup memory `matmul_coop.wgsl` takes: two tiles of 64 x 40 f16s and the sums'
/// 64 x 68 f32s.
const COOP_WG_BYTES: u32 = 2 * 64 * 40 * 2 + 64 * 68 * 4;

/// The decode mat-vec's workgroup shape per kind of dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MvShapes {
    /// Gate and up (two weights, SwiGLU folded in).
    pub gu: MvShape,
    /// Rows wider than 4096 (ffn_down).
    pub long: MvShape,
    /// 16384 rows or more (the output head).
    pub head: MvShape,
    /// The others (q/k/v, the attention output).
    pub short: MvShape,
    /// Whether the shapes also apply to dispatches with a weight read by quads (formats without
    /// a block dot); else those take 64x1. Set by any [`MvShapes::parse`]; off by default (the
    /// shapes were measured on Q4_K and Q6_K only).
    pub quads: bool,
}

impl MvShapes {
    /// 64 invocations a row, one row a workgroup, everywhere (`mv=64x1`).
    pub const ONE: MvShapes = MvShapes {
        gu: MvShape::ONE,
        long: MvShape::ONE,
        head: MvShape::ONE,
        short: MvShape::ONE,
        quads: true,
    };

    /// The defaults: the best per kind of each shape's GPU time on an H100 (TinyLlama Q4_K_M,
    /// per-kernel profile; figures in BENCHMARKS.md and
    /// bench/results/vulkan-h100-2026-11-26-issue6-round3-variants.txt).
    pub const DEFAULT: MvShapes = MvShapes {
        gu: MvShape::ONE,
        long: MvShape { wg: 256, rpw: 4 },
        head: MvShape { wg: 128, rpw: 4 },
        short: MvShape { wg: 128, rpw: 4 },
        quads: false,
    };

    /// `DEFAULT` changed by a list of `KIND=WGxRPW` separated by `,` or `;` (`gu`, `long`,
    /// `head`, `short`; `WGxRPW` alone sets every kind), e.g. `gu=128x1,long=256x1`; None if
    /// malformed.
    pub fn parse(s: &str) -> Option<MvShapes> {
        let mut m = MvShapes::DEFAULT;
        m.quads = !s.trim().is_empty();
        for item in s.split([',', ';']).map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                None => {
                    let v = MvShape::parse(item)?;
                    m = MvShapes {
                        gu: v,
                        long: v,
                        head: v,
                        short: v,
                        quads: true,
                    };
                }
                Some((k, v)) => {
                    let v = MvShape::parse(v)?;
                    match k.trim() {
                        "gu" => m.gu = v,
                        "long" => m.long = v,
                        "head" => m.head = v,
                        "short" => m.short = v,
                        _ => return None,
                    }
                }
            }
        }
        Some(m)
    }

    /// The shape for a dispatch of `k` weights of `rows` rows in all, `cols` wide, `blocks` if
    /// every weight is read by block dots.
    pub fn pick(&self, k: usize, rows: usize, cols: usize, blocks: bool) -> MvShape {
        if !blocks && !self.quads {
            MvShape::ONE
        } else if k == 2 {
            self.gu
        } else if rows >= 16384 {
            self.head
        } else if cols > 4096 {
            self.long
        } else {
            self.short
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            subgroups: true,
            adapter: None,
            timeout: Duration::from_secs(600),
            submit_every: SUBMIT_EVERY,
            profile: false,
            profile_passes: false,
            checked: false,
            max_binding: None,
            matvec: true,
            matvec_shapes: MvShapes::DEFAULT,
            tile_min: TILE_MIN,
            attn_tile_min: TILE_MIN,
            kv_f16: true,
            f16: false,
            q8: false,
            tile_prefetch: false,
            coop: CoopMode::Off,
        }
    }
}

impl Options {
    /// The defaults with the documented switches applied: `RUSTORCH_WGPU_ADAPTER=NAME` and
    /// `RUSTORCH_WGPU_PROFILE=1` (or `=pass`).
    pub fn from_env() -> Options {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let profile = env("RUSTORCH_WGPU_PROFILE");
        Options {
            adapter: env("RUSTORCH_WGPU_ADAPTER"),
            profile: profile.as_deref().is_some_and(|v| v != "0"),
            profile_passes: profile.as_deref() == Some("pass"),
            ..Options::default()
        }
    }

    /// Sets one option by name (`rustorch --backend-opt wgpu.KEY=VALUE`): `adapter`, `profile`
    /// (`0`, `1`, `pass`), `subgroups`, `matvec`, `checked` (`0`/`1`), `timeout` (seconds),
    /// `submit_every` (ops), `tile_min` and `attn_tile_min` (tokens, 0: off), `f16`, `kv_f16`,
    /// `q8` and `tile_prefetch` (`0`/`1`), `coop` (`0`, `1`, `emu`, `emu8`; see
    /// [`Options::coop`]), `mv` (see [`MvShapes::parse`]), `max_binding` (bytes, see
    /// [`Options::max_binding`]; `0`: the adapter's limit).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let flag = || match value {
            "0" | "false" | "off" => Ok(false),
            "1" | "true" | "on" => Ok(true),
            _ => Err(format!("wgpu.{key}: expected 0 or 1, got {value:?}")),
        };
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("wgpu.{key}: expected a number, got {value:?}"))
        };
        match key {
            "adapter" => self.adapter = Some(value.to_string()).filter(|v| !v.is_empty()),
            "profile" => {
                self.profile = value != "0";
                self.profile_passes = value == "pass";
            }
            "subgroups" => self.subgroups = flag()?,
            "matvec" => self.matvec = flag()?,
            "checked" => self.checked = flag()?,
            "timeout" => self.timeout = Duration::from_secs(number()?),
            "submit_every" => self.submit_every = number()? as usize,
            "max_binding" => self.max_binding = Some(number()?).filter(|&b| b > 0),
            "tile_min" => self.tile_min = number()? as usize,
            "attn_tile_min" => self.attn_tile_min = number()? as usize,
            "f16" => self.f16 = flag()?,
            "kv_f16" => self.kv_f16 = flag()?,
            "q8" => self.q8 = flag()?,
            "tile_prefetch" => self.tile_prefetch = flag()?,
            "coop" => {
                self.coop = match value {
                    "emu" => CoopMode::Emulated(16),
                    "emu8" => CoopMode::Emulated(8),
                    _ if flag()? => CoopMode::On,
                    _ => CoopMode::Off,
                }
            }
            "mv" => {
                self.matvec_shapes = MvShapes::parse(value)
                    .ok_or_else(|| format!("wgpu.mv: {value:?} is not a list of KIND=WGxRPW"))?
            }
            _ => return Err(format!("unknown wgpu option {key:?}")),
        }
        Ok(())
    }
}

fn backends() -> wgpu::Backends {
    if cfg!(target_os = "macos") {
        wgpu::Backends::METAL
    } else {
        wgpu::Backends::VULKAN
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backends(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Whether a hardware adapter is present: `--backend gpu` should not pick a software rasterizer
/// (lavapipe), which `--backend vulkan` still can.
pub(crate) fn present() -> bool {
    pollster::block_on(instance().enumerate_adapters(backends()))
        .iter()
        .any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

/// The cooperative matrices the tiled matmul takes on `adapter` for `mode`: the hardware's where
/// it has S x S x S ones (16, else 8) of f16 inputs and f32 sums, subgroups (`subgroups`: asked
/// for and present) of exactly 32 ([`subgroups_of_32`]) and `matmul_coop.wgsl`'s workgroup
/// memory; else none (the tiles of `matmul_tile.wgsl`). Emulated: wherever the adapter has
/// `shader-f16` and the memory.
fn pick_coop(
    mode: CoopMode,
    adapter: &wgpu::Adapter,
    subgroups: bool,
    has_f16: bool,
) -> Option<shaders::Coop> {
    let memory = adapter.limits().max_compute_workgroup_storage_size >= COOP_WG_BYTES;
    match mode {
        CoopMode::Off => None,
        CoopMode::Emulated(size) => (has_f16 && memory).then_some(shaders::Coop {
            size,
            emulated: true,
        }),
        CoopMode::On => {
            let info = adapter.get_info();
            if !(has_f16
                && memory
                && subgroups
                && subgroups_of_32(&info)
                && adapter
                    .features()
                    .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX))
            {
                return None;
            }
            let props = adapter.cooperative_matrix_properties();
            [16, 8].into_iter().find_map(|size| {
                props
                    .iter()
                    .any(|p| {
                        p.m_size == size
                            && p.n_size == size
                            && p.k_size == size
                            && p.ab_type == wgpu::CooperativeScalarType::F16
                            && p.cr_type == wgpu::CooperativeScalarType::F32
                    })
                    .then_some(shaders::Coop {
                        size,
                        emulated: false,
                    })
            })
        }
    }
}

/// Whether every subgroup of the adapter has 32 invocations: Vulkan's says so by its range, Metal
/// reports 4..64 for every GPU while Apple's run SIMD-groups of 32.
fn subgroups_of_32(info: &wgpu::AdapterInfo) -> bool {
    (info.subgroup_min_size == 32 && info.subgroup_max_size == 32)
        || (info.backend == wgpu::Backend::Metal && info.name.starts_with("Apple"))
}

/// The largest storage buffer the adapter binds whole.
fn max_binding(limits: &wgpu::Limits) -> u64 {
    limits
        .max_buffer_size
        .min(limits.max_storage_buffer_binding_size)
}

fn err(msg: impl Into<String>) -> ModelError {
    ModelError::Backend(msg.into())
}

/// A compiled kernel and the layout of its bindings.
struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    name: String,
}

/// A buffer as the recorder sees it: the handle and an id for the bind group cache.
#[derive(Clone, Copy)]
pub(crate) struct Bind<'a> {
    pub buf: &'a wgpu::Buffer,
    pub id: u64,
}

enum Op {
    Dispatch {
        pipe: usize,
        group: wgpu::BindGroup,
        offset: u32,
        size: [u32; 3],
        serial: u64,
    },
    Copy {
        src: wgpu::Buffer,
        src_off: u64,
        dst: wgpu::Buffer,
        size: u64,
    },
}

pub(crate) struct Context {
    pub device: wgpu::Device,
    queue: wgpu::Queue,
    pub kind: Device,
    /// Adapter name and driver, for messages and benchmarks.
    pub adapter: String,
    pub subgroups: bool,
    /// Whether decode matmuls use the mat-vec kernel.
    pub matvec: bool,
    /// The mat-vec's workgroup shapes, those the adapter cannot take replaced by 64x1.
    pub matvec_shapes: MvShapes,
    /// Tokens from which prompt matmuls are tiled (0: never; see [`Options::tile_min`]).
    pub tile_min: usize,
    /// Rows from which prompt attention is tiled (0: never; see [`Options::attn_tile_min`]).
    pub attn_tile_min: usize,
    /// Whether the tiled matmul keeps its tiles in f16 (the `f16` option, where the adapter has
    /// `shader-f16`).
    pub f16: bool,
    /// Whether the KV cache holds f16 values (the `kv_f16` option, where the adapter has
    /// `shader-f16`).
    pub kv_f16: bool,
    /// Whether decode mat-vecs of Q4_K / Q6_K weights run over 8-bit activations (the `q8`
    /// option, with the mat-vec).
    pub q8: bool,
    /// See [`Options::tile_prefetch`].
    pub tile_prefetch: bool,
    /// How the tiled matmul multiplies its tiles, where by cooperative matrices (see
    /// [`Options::coop`]).
    pub coop: Option<shaders::Coop>,
    pub limits: wgpu::Limits,
    /// Bytes one weight buffer holds at most: the largest buffer the adapter binds, or the
    /// `max_binding` option's figure if lower.
    pub weight_binding: u64,
    timeout: Duration,
    submit_every: usize,
    /// Submissions made in this step (since the last read).
    step_subs: u32,
    checked: bool,
    pipes: Vec<Pipe>,
    pipe_ids: HashMap<String, usize>,
    groups: HashMap<(usize, [u64; MAX_BINDS]), wgpu::BindGroup>,
    /// Serial number of the next recorded op.
    serial: u64,
    params: wgpu::Buffer,
    param_host: Vec<u8>,
    align: u32,
    n_slots: u32,
    ops: Vec<Op>,
    staging: Option<wgpu::Buffer>,
    next_id: u64,
    /// Uncaptured errors and device loss, reported by the next flush (an op that submits, or a
    /// read).
    errors: Arc<Mutex<Vec<String>>>,
    prof: Option<Profile>,
    /// GPU timestamps of each dispatch (profiling, where the adapter has them).
    stamps: Option<Stamps>,
    /// Stamp whole passes rather than each dispatch in a pass of its own.
    stamp_passes: bool,
}

/// Timestamp queries around every dispatch of a submission, and the GPU time per kernel.
struct Stamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per tick.
    period: f64,
    /// Kernel name and grid -> (dispatches, nanoseconds).
    kernels: HashMap<String, (u64, f64)>,
    /// From the first dispatch's start to the last one's end, summed over submissions.
    span_ns: f64,
}

/// Host time by phase, summed over the run (`RUSTORCH_WGPU_PROFILE=1`).
#[derive(Default)]
struct Profile {
    /// When the first op after the last submission was recorded.
    since: Option<std::time::Instant>,
    record: Duration,
    encode: Duration,
    submit: Duration,
    wait: Duration,
    submissions: u64,
    reads: u64,
    ops: u64,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(p) = &self.prof {
            let reads = p.reads.max(1) as f64;
            let per = |d: Duration| d.as_secs_f64() * 1e6 / reads;
            eprintln!(
                "wgpu profile: {} reads, {} submissions, {} ops; per read: record {:.0} us, encode {:.0} us, submit {:.0} us, wait for the GPU {:.0} us",
                p.reads,
                p.submissions,
                p.ops,
                per(p.record),
                per(p.encode),
                per(p.submit),
                per(p.wait)
            );
            if let Some(st) = &self.stamps {
                let total: f64 = st.kernels.values().map(|e| e.1).sum();
                eprintln!(
                    "wgpu GPU time per read: kernels {:.0} us, first start to last end {:.0} us",
                    total / 1e3 / reads,
                    st.span_ns / 1e3 / reads
                );
                // Per kernel, then per kernel and grid (which tells the matmuls apart).
                let mut by_name: HashMap<&str, (u64, f64)> = HashMap::new();
                for (name, (count, ns)) in &st.kernels {
                    let e = by_name
                        .entry(name.split(" [").next().unwrap_or(name))
                        .or_default();
                    e.0 += count;
                    e.1 += ns;
                }
                let mut names: Vec<_> = by_name.into_iter().collect();
                names.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
                let mut grids: Vec<_> = st.kernels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                grids.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
                for (name, (count, ns)) in names.iter().chain(grids.iter().take(16)) {
                    eprintln!(
                        "wgpu kernel {name}: {:.1} per read, {:.1} us per read, {:.2} us each",
                        *count as f64 / reads,
                        ns / 1e3 / reads,
                        ns / 1e3 / *count as f64
                    );
                }
            }
        }
    }
}

impl Context {
    pub fn new(opts: &Options) -> Result<Context, ModelError> {
        let instance = instance();
        let api = if cfg!(target_os = "macos") {
            "Metal"
        } else {
            "Vulkan"
        };
        let adapter = match &opts.adapter {
            Some(want) => {
                let all = pollster::block_on(instance.enumerate_adapters(backends()));
                let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
                all.into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want.to_lowercase()))
                    .ok_or_else(|| {
                        err(format!(
                            "no {api} adapter matches RUSTORCH_WGPU_ADAPTER='{want}' (adapters: {})",
                            names.join(", ")
                        ))
                    })?
            }
            None => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            }))
            .map_err(|e| {
                err(format!(
                    "no {api} GPU adapter found ({e}); install a {api} driver{}",
                    if cfg!(target_os = "macos") {
                        ""
                    } else {
                        " (e.g. mesa-vulkan-drivers, or the GPU vendor's)"
                    }
                ))
            })?,
        };
        let info = adapter.get_info();
        let subgroups = opts.subgroups && adapter.features().contains(wgpu::Features::SUBGROUP);
        let limits = adapter.limits();
        let mut features = if subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let f16 = opts.f16 && has_f16;
        let kv_f16 = opts.kv_f16 && has_f16;
        if f16 || kv_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let coop = pick_coop(opts.coop, &adapter, subgroups, has_f16);
        if coop.is_some() {
            features |= wgpu::Features::SHADER_F16;
        }
        if coop.is_some_and(|c| !c.emulated) {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let stamped = opts.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        if stamped {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("rustorch"),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            // SAFETY: the one experimental feature asked for is the cooperative matrices, and
            // only with `Options::coop` on (off by default); wgpu documents that its
            // experimental features may have bugs, which the kernel tests are there to catch.
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            ..Default::default()
        }))
        .map_err(|e| err(format!("cannot open GPU '{}': {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let sink = Arc::clone(&errors);
        device.set_device_lost_callback(move |reason, msg| {
            sink.lock()
                .unwrap()
                .push(format!("GPU device lost ({reason:?}): {msg}"));
        });
        let align = limits
            .min_uniform_buffer_offset_alignment
            .max(PARAM_BYTES as u32);
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: MAX_SLOTS as u64 * align as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let stamps = stamped.then(|| {
            let bytes = 2 * MAX_SLOTS as u64 * 8;
            Stamps {
                set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * MAX_SLOTS,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps read back"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period: queue.get_timestamp_period() as f64,
                kernels: HashMap::new(),
                span_ns: 0.0,
            }
        });
        if opts.profile && !stamped {
            eprintln!("wgpu profile: this adapter has no timestamp queries; host times only");
        }
        // A shape of several rows a workgroup needs whole subgroups a row (an unknown largest
        // subgroup counts as Vulkan's largest, 128).
        let max_sg = match info.subgroup_max_size {
            0 => 128,
            s => s,
        };
        let fits = |v: MvShape| {
            let ok = v.wg <= limits.max_compute_invocations_per_workgroup
                && v.wg <= limits.max_compute_workgroup_size_x
                && (v.rpw == 1 || v.per_row() >= max_sg);
            if ok {
                v
            } else {
                MvShape::ONE
            }
        };
        let m = opts.matvec_shapes;
        let matvec_shapes = MvShapes {
            gu: fits(m.gu),
            long: fits(m.long),
            head: fits(m.head),
            short: fits(m.short),
            quads: m.quads,
        };
        Ok(Context {
            stamps,
            stamp_passes: opts.profile_passes,
            matvec: opts.matvec && subgroups,
            matvec_shapes,
            f16,
            kv_f16,
            q8: opts.q8 && opts.matvec && subgroups,
            tile_prefetch: opts.tile_prefetch,
            coop,
            // Every WebGPU adapter takes the tiled matmul's 128 invocations and 16 KiB of
            // workgroup memory (the spec's minimum limits); the tiled attention's larger
            // workgroup memory is checked per head size when dispatched.
            attn_tile_min: opts.attn_tile_min,
            tile_min: opts.tile_min,
            device,
            queue,
            kind: if cfg!(target_os = "macos") {
                Device::Metal
            } else {
                Device::Vulkan
            },
            adapter: format!(
                "{} ({:?}, {} {})",
                info.name, info.device_type, info.driver, info.driver_info
            ),
            subgroups,
            weight_binding: max_binding(&limits).min(opts.max_binding.unwrap_or(u64::MAX)),
            limits,
            timeout: opts.timeout,
            submit_every: opts.submit_every,
            step_subs: 0,
            checked: opts.checked,
            pipes: Vec::new(),
            pipe_ids: HashMap::new(),
            groups: HashMap::new(),
            serial: 0,
            params,
            param_host: vec![0; (MAX_SLOTS * align) as usize],
            align,
            n_slots: 0,
            ops: Vec::new(),
            staging: None,
            next_id: 1,
            errors,
            prof: opts.profile.then(Profile::default),
        })
    }

    /// Ops recorded and not yet submitted.
    pub fn pending(&self) -> usize {
        self.ops.len()
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Fails with the first error the device reported since the last check.
    fn check(&self) -> Result<(), ModelError> {
        let mut errors = self.errors.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let all = errors.join("; ");
        errors.clear();
        Err(err(format!("GPU error: {all}")))
    }

    /// A storage buffer of `bytes` (rounded up to whole 16-byte vectors), zeroed, or an error if the
    /// device cannot hold it.
    pub fn buffer(
        &mut self,
        label: &str,
        bytes: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, ModelError> {
        let bytes = bytes.max(16).div_ceil(16) * 16;
        let max = max_binding(&self.limits);
        if bytes > max {
            return Err(err(format!(
                "{label}: a buffer of {} MiB exceeds this GPU's limit of {} MiB",
                bytes >> 20,
                max >> 20
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | extra,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(err(format!(
                "{label}: out of GPU memory allocating {} MiB ({e})",
                bytes >> 20
            )));
        }
        self.check()?;
        Ok(buf)
    }

    /// Bytes of the largest storage buffer the adapter binds whole ([`Context::buffer`]'s limit).
    pub fn max_buffer(&self) -> u64 {
        max_binding(&self.limits)
    }

    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, data: &[u8]) {
        self.queue.write_buffer(buf, offset, data);
    }

    /// The pipeline `key`, compiled from `src()` on first use. `writes[i]`: whether binding
    /// `i + 1` (a storage buffer) is written; binding 0 is the op's parameters.
    pub fn pipe(
        &mut self,
        key: &str,
        writes: &[bool],
        src: impl FnOnce() -> String,
    ) -> Result<usize, ModelError> {
        if let Some(&i) = self.pipe_ids.get(key) {
            return Ok(i);
        }
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(PARAM_BYTES),
            },
            count: None,
        }];
        for (i, &w) in writes.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: !w },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(src().into()),
        };
        let module = if self.checked {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every index the kernels compute stays inside its buffer for the parameters
            // the host passes: the host checks each op's buffer sizes against its shape before
            // recording it (matmul, embed, read, write, kv_store), the step's token ids are
            // checked (and also clamped in the kernel), its sequences and positions checked
            // against the cache each op reads or writes, and every loop bound is a parameter or a constant, so the
            // loops end. Dropping naga's per-access clamps and loop counters is what makes the
            // kernels' inner loops tight; the `checked` option restores them.
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(key),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(key),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(err(format!("shader '{key}' does not build: {e}")));
        }
        self.pipes.push(Pipe {
            pipeline,
            layout,
            name: key.to_string(),
        });
        self.pipe_ids.insert(key.to_string(), self.pipes.len() - 1);
        Ok(self.pipes.len() - 1)
    }

    /// Takes back the op with serial number `serial` if it is the last one recorded and not yet
    /// submitted (to record a fused op in its place).
    pub fn pop_if_last(&mut self, serial: u64) -> bool {
        match self.ops.last() {
            Some(Op::Dispatch { serial: s, .. }) if *s == serial => {
                self.ops.pop();
                self.n_slots -= 1;
                true
            }
            _ => false,
        }
    }

    /// Records one dispatch of `pipe` over `bufs` (bindings 1..) with parameter words `params`;
    /// returns the op's serial number, or the error of the submission it made room with.
    pub fn dispatch(
        &mut self,
        pipe: usize,
        bufs: &[Bind],
        params: &[u32],
        size: [u32; 3],
    ) -> Result<u64, ModelError> {
        // Submitting before this op rather than after the last one keeps the last op recorded
        // open for a fold (see `pop_if_last`).
        // The first submission of a step comes sooner, so the GPU starts early.
        let batch = (self.submit_every >> (3 - self.step_subs.min(3))).max(1);
        let due = self.submit_every > 0 && self.ops.len() >= batch;
        if self.n_slots == MAX_SLOTS || due {
            self.flush()?;
        }
        assert!(params.len() * 4 <= PARAM_BYTES as usize && bufs.len() <= MAX_BINDS);
        if let Some(p) = &mut self.prof {
            p.since.get_or_insert_with(std::time::Instant::now);
            p.ops += 1;
        }
        let off = (self.n_slots * self.align) as usize;
        self.param_host[off..off + params.len() * 4].copy_from_slice(bytemuck::cast_slice(params));
        let mut ids = [0u64; MAX_BINDS];
        for (i, b) in bufs.iter().enumerate() {
            ids[i] = b.id;
        }
        let group = self
            .groups
            .entry((pipe, ids))
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.params,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAM_BYTES),
                    }),
                }];
                for (i, b) in bufs.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: b.buf.as_entire_binding(),
                    });
                }
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &self.pipes[pipe].layout,
                    entries: &entries,
                })
            })
            .clone();
        self.serial += 1;
        self.ops.push(Op::Dispatch {
            pipe,
            group,
            offset: off as u32,
            size,
            serial: self.serial,
        });
        self.n_slots += 1;
        Ok(self.serial)
    }

    /// Drops the ops recorded and not yet submitted (a step that failed part-way).
    pub fn discard(&mut self) {
        self.ops.clear();
        self.n_slots = 0;
        self.step_subs = 0;
    }

    /// Submits everything recorded so far in one command buffer.
    pub fn flush(&mut self) -> Result<(), ModelError> {
        if self.ops.is_empty() {
            return self.check();
        }
        let t0 = std::time::Instant::now();
        if let Some(p) = &mut self.prof {
            if let Some(since) = p.since.take() {
                p.record += t0 - since;
            }
        }
        let used = (self.n_slots * self.align) as usize;
        self.queue
            .write_buffer(&self.params, 0, &self.param_host[..used.max(4)]);
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        // Profiling with timestamps: each dispatch in its own pass, stamped at both ends.
        let mut stamped: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.ops.len() {
            if let Op::Copy {
                src,
                src_off,
                dst,
                size,
            } = &self.ops[i]
            {
                enc.copy_buffer_to_buffer(src, *src_off, dst, 0, *size);
                i += 1;
                continue;
            }
            let q = 2 * stamped.len() as u32;
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: self
                    .stamps
                    .as_ref()
                    .map(|st| wgpu::ComputePassTimestampWrites {
                        query_set: &st.set,
                        beginning_of_pass_write_index: Some(q),
                        end_of_pass_write_index: Some(q + 1),
                    }),
            });
            let mut last_pipe = usize::MAX;
            while let Some(Op::Dispatch {
                pipe,
                group,
                offset,
                size,
                ..
            }) = self.ops.get(i)
            {
                if *pipe != last_pipe {
                    pass.set_pipeline(&self.pipes[*pipe].pipeline);
                    last_pipe = *pipe;
                }
                pass.set_bind_group(0, group, &[*offset]);
                pass.dispatch_workgroups(size[0], size[1], size[2]);
                i += 1;
                if self.stamps.is_some() && !self.stamp_passes {
                    stamped.push(format!(
                        "{} [{}x{}x{}]",
                        self.pipes[*pipe].name, size[0], size[1], size[2]
                    ));
                    break;
                }
            }
            if self.stamps.is_some() && self.stamp_passes {
                stamped.push("pass".to_string());
            }
        }
        if let Some(st) = &self.stamps {
            if !stamped.is_empty() {
                let n = 2 * stamped.len() as u32;
                enc.resolve_query_set(&st.set, 0..n, &st.resolve, 0);
                enc.copy_buffer_to_buffer(&st.resolve, 0, &st.readback, 0, n as u64 * 8);
            }
        }
        let commands = enc.finish();
        let t1 = std::time::Instant::now();
        self.queue.submit([commands]);
        if let Some(p) = &mut self.prof {
            p.encode += t1 - t0;
            p.submit += t1.elapsed();
            p.submissions += 1;
        }
        self.ops.clear();
        self.n_slots = 0;
        self.step_subs += 1;
        if !stamped.is_empty() {
            self.read_stamps(&stamped)?;
        }
        self.check()
    }

    /// Waits for the submission just made and adds its kernels' GPU times to the profile.
    fn read_stamps(&mut self, names: &[String]) -> Result<(), ModelError> {
        let Some(st) = &mut self.stamps else {
            return Ok(());
        };
        let t0 = std::time::Instant::now();
        let slice = st.readback.slice(..names.len() as u64 * 16);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(self.timeout),
            })
            .map_err(|e| {
                err(format!(
                    "the GPU did not finish the profiled submission ({e})"
                ))
            })?;
        if !matches!(rx.try_recv(), Ok(Ok(()))) {
            return Err(err("cannot read the kernel timestamps back"));
        }
        {
            let data = slice
                .get_mapped_range()
                .map_err(|e| err(format!("cannot read the kernel timestamps back ({e})")))?;
            let ticks: &[u64] = bytemuck::cast_slice(&data);
            let mut first = u64::MAX;
            let mut last = 0;
            for (name, t) in names.iter().zip(ticks.chunks_exact(2)) {
                let e = st.kernels.entry(name.clone()).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += t[1].saturating_sub(t[0]) as f64 * st.period;
                first = first.min(t[0]);
                last = last.max(t[1]);
            }
            st.span_ns += last.saturating_sub(first) as f64 * st.period;
        }
        st.readback.unmap();
        if let Some(p) = &mut self.prof {
            p.wait += t0.elapsed();
        }
        Ok(())
    }

    /// Copies `bytes` bytes of `src` from `offset` to the host, after everything recorded.
    pub fn read(
        &mut self,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>, ModelError> {
        let bytes = bytes.div_ceil(4) * 4;
        if self.staging.as_ref().is_none_or(|s| s.size() < bytes) {
            self.staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes.next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = self.staging.clone().expect("made above");
        self.ops.push(Op::Copy {
            src: src.clone(),
            src_off: offset,
            dst: staging.clone(),
            size: bytes,
        });
        self.flush()?;
        // The next op starts a new step.
        self.step_subs = 0;
        let slice = staging.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let t0 = std::time::Instant::now();
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(self.timeout),
        });
        if let Some(p) = &mut self.prof {
            p.wait += t0.elapsed();
            p.reads += 1;
        }
        self.check()?;
        if let Err(e) = waited {
            return Err(err(format!(
                "the GPU did not finish within {} s ({e}); raise the wgpu.timeout option to wait longer",
                self.timeout.as_secs()
            )));
        }
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(err(format!("cannot read GPU memory back: {e}"))),
            Err(_) => return Err(err("the GPU read-back did not complete")),
        }
        let data = slice
            .get_mapped_range()
            .map_err(|e| err(format!("cannot read GPU memory back: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }
}
