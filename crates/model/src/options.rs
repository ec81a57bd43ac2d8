//! Backend settings: typed, with the best measured values as defaults, filled in by the caller.
//! The CLI applies the documented environment switches ([`BackendOptions::from_env`]) and then
//! `--backend-opt KEY=VALUE` ([`BackendOptions::set`]); nothing deeper reads the environment
//! except `RUSTORCH_DEBUG` (named activations) and `RUSTORCH_ISA` (the CPU kernels' cap).

/// Settings of every backend; each backend reads its own part.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    pub cpu: CpuOptions,
    pub cuda: CudaOptions,
    #[cfg(feature = "wgpu")]
    pub wgpu: crate::backend::wgpu::Options,
}

/// The CPU backend's settings.
#[derive(Debug, Clone)]
pub struct CpuOptions {
    /// Copy every matrix weight at load into memory of the backend's own (transparent huge
    /// pages where the OS has them), Q4_0 and Q4_K rewritten into the packed layouts whose
    /// dot-product lanes are blocks. `RUSTORCH_CPU_PACK=0` reads the mapped file as it is.
    pub pack: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { pack: true }
    }
}

/// The CUDA backend's settings; all on by default, each switch for measuring what it buys.
#[derive(Debug, Clone)]
pub struct CudaOptions {
    /// Capture the decode step once as a CUDA graph and replay it.
    pub graph: bool,
    /// Prompts through the flash-attention kernel (sm_80+); off: cuBLAS GEMMs around a softmax.
    pub flash: bool,
    /// Programmatic Dependent Launch for the decode step's kernels (sm_90+).
    pub pdl: bool,
    /// Mat-vecs pull their weight rows into L2 before waiting on the previous kernel.
    pub prefetch: bool,
    /// The decode attention pulls the cached keys and values into L2 likewise.
    pub attn_prefetch: bool,
    /// Warps in a mat-vec block: 4, 8 or 16.
    pub mv_warps: usize,
    /// Most warps a mat-vec row gets: 1, 2 or 4 (2 was the fastest on an H100 for TinyLlama).
    pub wpr_max: usize,
    /// Prompt matmuls read the quantized weights into tensor-core tiles (sm_80+); off: each
    /// weight is dequantized to an f16 copy for cuBLAS; `None` (auto): the former for the widths
    /// where it measured faster (see `cuda::ops::qgemm_for`).
    pub qgemm: Option<bool>,
    /// Tokens a prompt-matmul block owns: 64 or 128, or 0 to choose by the matrix's size.
    pub qgemm_tm: usize,
    /// Q4_K / Q6_K prompt matmuls of more than 64 rows through the super-block kernel (whole
    /// super-blocks staged in shared memory, 64x64 warp tiles); off: the 32-column tile kernel.
    pub qgemm_sb: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            graph: true,
            flash: true,
            pdl: true,
            prefetch: true,
            attn_prefetch: true,
            mv_warps: 4,
            wpr_max: 2,
            qgemm: None,
            qgemm_tm: 0,
            qgemm_sb: true,
        }
    }
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "0" | "false" | "off" => Ok(false),
        "1" | "true" | "on" => Ok(true),
        _ => Err(format!("{key}: expected 0 or 1, got {value:?}")),
    }
}

fn one_of(key: &str, value: &str, allowed: &[usize]) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|v| allowed.contains(v))
        .ok_or_else(|| format!("{key}: expected one of {allowed:?}, got {value:?}"))
}

impl BackendOptions {
    /// The defaults with the documented environment switches applied: `RUSTORCH_CPU_PACK=0`,
    /// `RUSTORCH_WGPU_ADAPTER=NAME`, `RUSTORCH_WGPU_PROFILE=1` (or `=pass`).
    pub fn from_env() -> BackendOptions {
        BackendOptions {
            cpu: CpuOptions {
                pack: std::env::var("RUSTORCH_CPU_PACK").map_or(true, |v| v != "0"),
            },
            cuda: CudaOptions::default(),
            #[cfg(feature = "wgpu")]
            wgpu: crate::backend::wgpu::Options::from_env(),
        }
    }

    /// Sets one option by its dotted name, as `--backend-opt KEY=VALUE` gives it: `cpu.pack`;
    /// `cuda.graph`, `cuda.flash`, `cuda.pdl`, `cuda.prefetch`, `cuda.attn_prefetch` (0/1),
    /// `cuda.mv_warps` (4, 8, 16), `cuda.wpr_max` (1, 2, 4), `cuda.qgemm` (0/1/auto),
    /// `cuda.qgemm_tm` (0, 64, 128), `cuda.qgemm_sb` (0/1); `wgpu.*` (see
    /// `wgpu::Options::set`, in builds with the `wgpu` feature).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let c = &mut self.cuda;
        match key {
            "cpu.pack" => self.cpu.pack = flag(key, value)?,
            "cuda.graph" => c.graph = flag(key, value)?,
            "cuda.flash" => c.flash = flag(key, value)?,
            "cuda.pdl" => c.pdl = flag(key, value)?,
            "cuda.prefetch" => c.prefetch = flag(key, value)?,
            "cuda.attn_prefetch" => c.attn_prefetch = flag(key, value)?,
            "cuda.mv_warps" => c.mv_warps = one_of(key, value, &[4, 8, 16])?,
            "cuda.wpr_max" => c.wpr_max = one_of(key, value, &[1, 2, 4])?,
            "cuda.qgemm" if value == "auto" => c.qgemm = None,
            "cuda.qgemm" => c.qgemm = Some(flag(key, value)?),
            "cuda.qgemm_tm" => c.qgemm_tm = one_of(key, value, &[0, 64, 128])?,
            "cuda.qgemm_sb" => c.qgemm_sb = flag(key, value)?,
            #[cfg(feature = "wgpu")]
            k if k.starts_with("wgpu.") => self.wgpu.set(&k["wgpu.".len()..], value)?,
            _ => return Err(format!("unknown backend option {key:?}")),
        }
        Ok(())
    }

    /// [`BackendOptions::set`] from `KEY=VALUE`.
    pub fn set_pair(&mut self, pair: &str) -> Result<(), String> {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("backend option {pair:?}: expected KEY=VALUE"))?;
        self.set(k.trim(), v.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_by_name() {
        let mut o = BackendOptions::default();
        o.set_pair("cpu.pack=0").unwrap();
        o.set_pair("cuda.mv_warps=8").unwrap();
        o.set_pair("cuda.graph=off").unwrap();
        assert!(!o.cpu.pack && o.cuda.mv_warps == 8 && !o.cuda.graph);
        assert!(o.set_pair("cuda.mv_warps=5").is_err());
        assert!(o.set_pair("cuda.nothing=1").is_err());
        assert!(o.set_pair("cuda.flash").is_err());
        assert!(o.set_pair("cpu.pack=maybe").is_err());
    }
}
