//! The GPU: context, one stream, device buffers, the compiled kernels and cuBLAS.
//!
//! Buffers are raw device allocations (`cuMemAlloc`) used through their addresses: kernels take
//! plain pointers, so a captured graph replays on the same addresses, and nothing here records
//! events per launch (cudarc's safe slices would, which a graph capture cannot hold).

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::options::CudaOptions;
use crate::ModelError;

const SOURCE: &str = include_str!("kernels.cu");

/// Kernel names in `kernels.cu`, loaded once; [`Kernels`] indexes them by the same order.
const KERNELS: &[&str] = &[
    "dequant_f16",
    "dequant_f32",
    "embed",
    "matvec",
    "quantize_q8_1",
    "rms_norm",
    "swiglu",
    "add",
    "to_f16",
    "rope",
    "add_bias",
    "scale",
    "geglu",
    "kv_store",
    "rope_store",
    "rows_to_heads",
    "attn_decode_32",
    "attn_decode_64",
    "attn_decode_96",
    "attn_decode_128",
    "attn_decode_256",
    "softmax_causal",
    "heads_to_rows",
    "argmax",
    "attn_prompt_32",
    "attn_prompt_64",
    "attn_prompt_96",
    "attn_prompt_128",
    "attn_prompt_256",
    "qgemm_f16_64",
    "qgemm_f16_128",
    "qgemm_q4_0_64",
    "qgemm_q4_0_128",
    "qgemm_q8_0_64",
    "qgemm_q8_0_128",
    "qgemm_q4_k_64",
    "qgemm_q4_k_128",
    "qgemm_q6_k_64",
    "qgemm_q6_k_128",
    "qgemm_any_64",
    "qgemm_any_128",
    "qgemm4_q4_k",
    "qgemm4_q6_k",
];

/// The kernels by name.
pub(crate) struct Kernels {
    pub dequant_f16: CudaFunction,
    pub dequant_f32: CudaFunction,
    pub embed: CudaFunction,
    pub matvec: CudaFunction,
    pub quantize_q8_1: CudaFunction,
    pub rms_norm: CudaFunction,
    pub swiglu: CudaFunction,
    pub add: CudaFunction,
    pub to_f16: CudaFunction,
    pub rope: CudaFunction,
    pub add_bias: CudaFunction,
    pub scale: CudaFunction,
    pub geglu: CudaFunction,
    pub kv_store: CudaFunction,
    pub rope_store: CudaFunction,
    pub rows_to_heads: CudaFunction,
    /// By head size: 32, 64, 96, 128, 256 ([`super::ops::Attn::kernel`]).
    pub attn_decode: [CudaFunction; 5],
    pub softmax_causal: CudaFunction,
    pub heads_to_rows: CudaFunction,
    pub argmax: CudaFunction,
    /// Flash attention of a prompt (sm_80+), by head size: 32, 64, 96, 128, 256.
    pub attn_prompt: [CudaFunction; 5],
    /// Prompt matmuls on the quantized weights (sm_80+), by format (F16, Q4_0, Q8_0, Q4_K,
    /// padded Q6_K, any other) and token tile (64, 128): [`super::ops::qgemm`].
    pub qgemm: [[CudaFunction; 2]; 6],
    /// The super-block prompt matmul (Q4_K, padded Q6_K): [`super::ops::qgemm`].
    pub qgemm4: [CudaFunction; 2],
    _module: Arc<CudaModule>,
}

/// A driver error as a [`ModelError`] that says what was being done.
pub(crate) fn drv_err(what: &str, e: drv::DriverError) -> ModelError {
    let msg = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    ModelError::Backend(format!("cuda: {what}: {msg}"))
}

/// A device allocation, freed on drop.
pub struct DevBuf {
    pub(crate) ptr: sys::CUdeviceptr,
    bytes: usize,
    ctx: Arc<CudaContext>,
}

impl DevBuf {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// The address `offset` bytes in.
    pub(crate) fn at(&self, offset: usize) -> u64 {
        debug_assert!(offset <= self.bytes);
        self.ptr + offset as u64
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.bytes > 0 && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from cuMemAlloc in this context and is freed once; the stream is
            // synchronized by `Gpu::drop`/`CudaModel::drop` before buffers go.
            unsafe {
                let _ = drv::free_sync(self.ptr);
            }
        }
    }
}

/// A kernel argument: its address is what cuLaunchKernel takes.
pub(crate) trait KArg {
    fn addr(&self) -> *mut c_void;
}
macro_rules! karg {
    ($($t:ty),*) => {$(
        impl KArg for $t {
            fn addr(&self) -> *mut c_void {
                self as *const $t as *mut c_void
            }
        }
    )*};
}
karg!(u64, i32, f32);

/// cuBLAS, when its library is present (the prompt path's GEMMs).
pub(crate) struct Blas {
    pub handle: blas_sys::cublasHandle_t,
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `Blas::new` and is destroyed once.
        unsafe {
            let _ = blas::destroy_handle(self.handle);
        }
    }
}

/// The device, its stream and the compiled kernels.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) k: Kernels,
    pub(crate) blas: Option<Blas>,
    /// Launches carry the programmatic-stream-serialization attribute (Programmatic Dependent
    /// Launch, sm_90+): set while the decode step is recorded, so each kernel's blocks start while
    /// the previous kernel finishes and wait in `griddepcontrol.wait` for its results.
    pub(crate) pdl: AtomicBool,
    /// The compute capability's major number (PDL needs 9).
    pub(crate) cc_major: i32,
    /// The card gives a block the shared memory of the super-block prompt matmul.
    qgemm4_ok: bool,
    pub(crate) opts: CudaOptions,
    name: String,
}

impl Gpu {
    /// Opens GPU 0 and compiles (or loads the cached) kernels, with the default options.
    pub fn new() -> Result<Gpu, ModelError> {
        Gpu::with_options(CudaOptions::default())
    }

    /// [`Gpu::new`] with the backend's options.
    pub fn with_options(opts: CudaOptions) -> Result<Gpu, ModelError> {
        if let Some(e) = super::driver_missing() {
            return Err(e);
        }
        let ctx = CudaContext::new(0).map_err(|e| drv_err("opening GPU 0", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| drv_err("reading the compute capability", e))?;
        if major < 7 {
            return Err(ModelError::Backend(format!(
                "cuda: {name} (compute capability {major}.{minor}) is too old; the kernels need 7.0 or newer"
            )));
        }
        // Every `Gpu` gets its own handle on the device's primary context. cudarc's event
        // tracking (for its CudaSlice, which we do not use) makes a handle's first new stream
        // synchronize the whole context: illegal while another thread's handle captures a decode
        // graph ("creating a stream: operation not permitted when stream is capturing", seen with
        // two test threads). This backend orders its work on its own stream itself.
        // SAFETY: no CudaSlice is ever made on this context; buffers are `DevBuf`s.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| drv_err("creating a stream", e))?;
        let ptx = ptx_for(major, minor)?;
        let module = ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| drv_err("loading the kernels", e))?;
        let f = |n: &str| {
            module
                .load_function(n)
                .map_err(|e| drv_err(&format!("kernel {n}"), e))
        };
        let mut names = KERNELS.iter();
        let mut next = || f(names.next().expect("kernel list"));
        let k = Kernels {
            dequant_f16: next()?,
            dequant_f32: next()?,
            embed: next()?,
            matvec: next()?,
            quantize_q8_1: next()?,
            rms_norm: next()?,
            swiglu: next()?,
            add: next()?,
            to_f16: next()?,
            rope: next()?,
            add_bias: next()?,
            scale: next()?,
            geglu: next()?,
            kv_store: next()?,
            rope_store: next()?,
            rows_to_heads: next()?,
            attn_decode: [next()?, next()?, next()?, next()?, next()?],
            softmax_causal: next()?,
            heads_to_rows: next()?,
            argmax: next()?,
            attn_prompt: [next()?, next()?, next()?, next()?, next()?],
            qgemm: [
                [next()?, next()?],
                [next()?, next()?],
                [next()?, next()?],
                [next()?, next()?],
                [next()?, next()?],
                [next()?, next()?],
            ],
            qgemm4: [next()?, next()?],
            _module: module,
        };
        // The super-block matmul needs up to 110 KiB of shared memory a block: Hopper and A100
        // have it (227 / 163 KiB), sm_86/89 (99 KiB), Turing (64) and Volta (96) do not.
        let optin = ctx
            .attribute(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(|e| drv_err("reading the shared memory limit", e))?
            .max(0) as usize;
        let big = [
            super::ops::qgemm4_shared(144),
            super::ops::qgemm4_shared(240),
        ];
        let qgemm4_ok = big.iter().all(|&b| b <= optin);
        let shared = k
            .qgemm
            .iter()
            .flatten()
            .map(|f| (f, super::ops::qgemm_shared(128)))
            .chain(k.qgemm4.iter().zip(big).filter(|_| qgemm4_ok));
        for f in k.qgemm4.iter().filter(|_| qgemm4_ok) {
            // All of L1 as shared memory, so two blocks fit a multiprocessor (the copies bypass L1).
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                100,
            )
            .map_err(|e| drv_err("preferring shared memory for the prompt matmul", e))?;
        }
        for (f, bytes) in shared {
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
            .map_err(|e| drv_err("allowing the prompt matmul its shared memory", e))?;
        }
        // SAFETY: only dlopen of the library.
        let blas = if unsafe { blas_sys::is_culib_present() } {
            let handle = blas::create_handle().map_err(|e| {
                ModelError::Backend(format!("cuda: creating a cuBLAS handle: {e:?}"))
            })?;
            // SAFETY: both handles are valid; the driver stream is the runtime stream type.
            unsafe { blas::set_stream(handle, stream.cu_stream() as _) }
                .map_err(|e| ModelError::Backend(format!("cuda: cuBLAS stream: {e:?}")))?;
            Some(Blas { handle })
        } else {
            None
        };
        Ok(Gpu {
            ctx,
            stream,
            k,
            blas,
            pdl: AtomicBool::new(false),
            cc_major: major,
            qgemm4_ok,
            opts,
            name,
        })
    }

    /// The card's name, as the driver gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the card has the tensor-core instructions of the prompt kernels (sm_80+).
    pub fn tensor_cores(&self) -> bool {
        self.cc_major >= 8
    }

    /// Whether the card gives a block the shared memory of the super-block prompt matmul.
    pub fn superblock_matmul(&self) -> bool {
        self.qgemm4_ok
    }

    /// Whether prompts can use cuBLAS (else they run token by token through the decode path).
    pub fn has_blas(&self) -> bool {
        self.blas.is_some()
    }

    /// `bytes` of device memory; running out is an error that says how much was asked for and what
    /// for.
    pub fn alloc(&self, bytes: usize, what: &str) -> Result<DevBuf, ModelError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("binding the context", e))?;
        if bytes == 0 {
            return Ok(DevBuf {
                ptr: 0,
                bytes: 0,
                ctx: self.ctx.clone(),
            });
        }
        // SAFETY: a plain allocation of `bytes` in the bound context.
        let ptr = unsafe { drv::malloc_sync(bytes) }.map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                let free = drv::mem_get_info().map(|(f, _)| f >> 20).unwrap_or(0);
                ModelError::Backend(format!(
                    "cuda: out of GPU memory allocating {} MiB for {what} ({free} MiB free); \
                     use a smaller context (-c) or a smaller model",
                    bytes >> 20
                ))
            } else {
                drv_err(&format!("allocating {what}"), e)
            }
        })?;
        Ok(DevBuf {
            ptr,
            bytes,
            ctx: self.ctx.clone(),
        })
    }

    /// A device buffer holding `data`.
    pub fn upload<T: Copy>(&self, data: &[T], what: &str) -> Result<DevBuf, ModelError> {
        let buf = self.alloc(std::mem::size_of_val(data), what)?;
        if buf.bytes > 0 {
            // On the stream, not the legacy default stream: a synchronous copy from pageable
            // memory may still be in flight when it returns, and kernels run on this stream.
            self.write(&buf, 0, data)?;
            self.sync()?;
        }
        Ok(buf)
    }

    /// Queues a copy of `data` to `dst` (at byte `offset`) on the stream.
    pub(crate) fn write<T: Copy>(
        &self,
        dst: &DevBuf,
        offset: usize,
        data: &[T],
    ) -> Result<(), ModelError> {
        assert!(offset + std::mem::size_of_val(data) <= dst.bytes);
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("binding the context", e))?;
        // SAFETY: the range lies inside `dst` (asserted); a pageable source is staged by the driver
        // before the call returns.
        unsafe { drv::memcpy_htod_async(dst.at(offset), data, self.stream.cu_stream()) }
            .map_err(|e| drv_err("copying to the GPU", e))
    }

    /// Copies `out.len()` values from `src` (at byte `offset`) to the host, waiting for the stream.
    pub(crate) fn read<T: Copy>(
        &self,
        src: &DevBuf,
        offset: usize,
        out: &mut [T],
    ) -> Result<(), ModelError> {
        assert!(offset + std::mem::size_of_val(out) <= src.bytes);
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("binding the context", e))?;
        // SAFETY: the range lies inside `src` (asserted); the stream is synchronized before `out`
        // is used.
        unsafe { drv::memcpy_dtoh_async(out, src.at(offset), self.stream.cu_stream()) }
            .map_err(|e| drv_err("copying from the GPU", e))?;
        self.sync()
    }

    /// Waits for all queued work; reports a kernel fault.
    pub fn sync(&self) -> Result<(), ModelError> {
        self.stream
            .synchronize()
            .map_err(|e| drv_err("running the kernels", e))
    }

    /// Queues the zeroing of `buf` on the stream.
    pub(crate) fn zero(&self, buf: &DevBuf) -> Result<(), ModelError> {
        if buf.bytes == 0 {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("binding the context", e))?;
        // SAFETY: the whole of a live buffer of this context.
        unsafe { drv::memset_d8_async(buf.ptr, 0, buf.bytes, self.stream.cu_stream()) }
            .map_err(|e| drv_err("zeroing GPU memory", e))
    }

    /// Queues a copy of `bytes` bytes from device address `src` to `dst` on the stream.
    pub(crate) fn copy(&self, dst: u64, src: u64, bytes: usize) -> Result<(), ModelError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("binding the context", e))?;
        // SAFETY: the callers pass ranges inside live buffers of this context.
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| drv_err("copying on the GPU", e))
    }

    /// Queues kernel `f` on the stream.
    pub(crate) fn launch(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        args: &[&dyn KArg],
    ) -> Result<(), ModelError> {
        self.launch_shared(f, grid, (block, 0), args)
    }

    /// [`Gpu::launch`] with `shared` bytes of dynamic shared memory a block.
    pub(crate) fn launch_shared(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        (block, shared): (u32, u32),
        args: &[&dyn KArg],
    ) -> Result<(), ModelError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("binding the context", e))?;
        let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.addr()).collect();
        if self.pdl.load(Ordering::Relaxed) {
            // SAFETY: a zeroed attribute is a valid plain-data value; only the PDL flag is set.
            let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attr.id =
                sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let config = sys::CUlaunchConfig {
                gridDimX: grid.0,
                gridDimY: grid.1,
                gridDimZ: grid.2,
                blockDimX: block,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: shared,
                hStream: self.stream.cu_stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            // SAFETY: as below; every kernel of the decode step starts with `griddepcontrol.wait`
            // before it reads what an earlier kernel wrote or writes anything.
            return unsafe {
                sys::cuLaunchKernelEx(
                    &config,
                    f.cu_function(),
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
                .result()
            }
            .map_err(|e| drv_err("launching a kernel", e));
        }
        // SAFETY: every kernel's parameters are the pointers and scalars `args` lists in the order
        // of its CUDA signature (each call site mirrors `kernels.cu`); pointers are live device
        // buffers of the sizes the kernels index.
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                shared,
                self.stream.cu_stream(),
                &mut ptrs,
            )
        }
        .map_err(|e| drv_err("launching a kernel", e))
    }

    /// `C = op(A) · op(B)` in cuBLAS's column-major terms (see [`super::backend`] for the row-major
    /// reading): f16 inputs, f32 accumulation, output `c_f16 ? f16 : f32`; `batch` copies with the
    /// given element strides.
    #[allow(clippy::too_many_arguments)] // a GEMM's operands
    pub(crate) fn gemm(
        &self,
        trans_a: bool,
        (m, n, k): (usize, usize, usize),
        (a, lda, stride_a): (u64, usize, usize),
        (b, ldb, stride_b): (u64, usize, usize),
        beta: f32,
        (c, ldc, stride_c, c_f16): (u64, usize, usize, bool),
        batch: usize,
    ) -> Result<(), ModelError> {
        let blas = self
            .blas
            .as_ref()
            .ok_or_else(|| ModelError::Backend("cuda: cuBLAS is not available".into()))?;
        let alpha = 1f32;
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let f16 = blas_sys::cudaDataType::CUDA_R_16F;
        let c_type = if c_f16 {
            f16
        } else {
            blas_sys::cudaDataType::CUDA_R_32F
        };
        let i = |v: usize| v as i32;
        // SAFETY: the pointers are live device buffers holding the matrices the sizes describe
        // (checked by the callers' buffer sizing); alpha/beta are host values (the default pointer
        // mode).
        unsafe {
            blas::gemm_strided_batched_ex(
                blas.handle,
                op(trans_a),
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                i(m),
                i(n),
                i(k),
                &alpha as *const f32 as *const c_void,
                a as *const c_void,
                f16,
                i(lda),
                stride_a as i64,
                b as *const c_void,
                f16,
                i(ldb),
                stride_b as i64,
                &beta as *const f32 as *const c_void,
                c as *mut c_void,
                c_type,
                i(ldc),
                stride_c as i64,
                i(batch),
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| ModelError::Backend(format!("cuda: cuBLAS GEMM: {e:?}")))
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for &b in p.iter() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rustorch").join("cuda"))
}

/// The kernels' PTX for compute capability `major.minor`: from the cache, else compiled by NVRTC
/// and cached. The cache is an optimisation only: a cache that cannot be read or written means
/// compiling again, never an error.
fn ptx_for(major: i32, minor: i32) -> Result<String, ModelError> {
    let arch = format!("sm_{major}{minor}");
    let key = fnv1a(&[SOURCE.as_bytes(), arch.as_bytes()]);
    let path = cache_dir().map(|d| d.join(format!("kernels-{arch}-{key:016x}.ptx")));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(ptx);
    }
    let opts = CompileOptions {
        // NVRTC takes the architecture as a &'static str; one string per process is leaked.
        arch: Some(Box::leak(arch.clone().into_boxed_str())),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(SOURCE, opts)
        .map_err(|e| ModelError::Backend(format!("cuda: compiling the kernels for {arch}: {e}")))?
        .to_src();
    if let Some(p) = &path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A name of its own per writer: threads of one process may compile at once.
        static WRITERS: AtomicUsize = AtomicUsize::new(0);
        let n = WRITERS.fetch_add(1, Ordering::Relaxed);
        let tmp = p.with_extension(format!("tmp{}-{n}", std::process::id()));
        if std::fs::write(&tmp, &ptx).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel a decode step may launch with Programmatic Dependent Launch waits for the
    /// kernel before it (`grid_wait`) before it reads an activation: one that does not may run
    /// on its inputs before they are written, and lets later kernels overtake the chain. Only the
    /// kernels of uploads, prompts and the host's argmax (launched without PDL) are exempt.
    #[test]
    fn decode_kernels_wait_for_their_predecessor() {
        const NO_PDL: &[&str] = &[
            "dequant_f16",
            "dequant_f32",
            "rows_to_heads",
            "attn_prompt_",
            "qgemm_",
            "qgemm4_",
            "softmax_causal",
            "heads_to_rows",
            "argmax",
        ];
        let marker = "extern \"C\" __global__ void";
        let kernels: Vec<&str> = SOURCE.split(marker).skip(1).collect();
        assert!(kernels.len() >= KERNELS.len() / 2, "kernels not found");
        for k in kernels {
            let head = k.trim_start();
            let head = match head.strip_prefix("__launch_bounds__(") {
                Some(r) => r.split_once(')').unwrap().1.trim_start(),
                None => head,
            };
            let name = head.split('(').next().unwrap().trim();
            if NO_PDL.iter().any(|n| name.contains(n)) {
                continue;
            }
            // A kernel's body up to the next top-level definition, or a template it calls.
            let body = k.split("\n}").next().unwrap();
            assert!(
                body.contains("grid_wait()") || body.contains("attn_decode_t<"),
                "kernel {name} does not call grid_wait()"
            );
        }
    }

    /// The kernels compile with NVRTC for every architecture the backend starts on (no GPU
    /// needed: NVRTC is a compiler library), and every kernel the backend loads is in the PTX.
    /// Needs libnvrtc on the library path (CI installs the `nvidia-cuda-nvrtc-cu12` wheel).
    #[test]
    fn kernels_compile_for_every_architecture() {
        // SAFETY: only tries to open the library with dlopen.
        assert!(
            unsafe { cudarc::nvrtc::sys::is_culib_present() },
            "libnvrtc not found: put its directory on LD_LIBRARY_PATH"
        );
        for arch in ["sm_70", "sm_80", "sm_90"] {
            let opts = CompileOptions {
                arch: Some(arch),
                options: vec!["--std=c++17".into()],
                ..Default::default()
            };
            let ptx = compile_ptx_with_opts(SOURCE, opts)
                .unwrap_or_else(|e| panic!("{arch}: {e}"))
                .to_src();
            for name in KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{arch}: kernel {name} missing from the PTX"
                );
            }
        }
    }
}
