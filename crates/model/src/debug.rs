//! Named activations for comparing two engines layer by layer (`RUSTORCH_DEBUG=1`).
//!
//! Names follow llama.cpp's graph (`attn_norm-3`, `ffn_out-3`, ...) so a disagreement can be
//! traced to the first layer where the two part ways.

use crate::backend::Backend;
use crate::ModelError;

/// Prints each named activation's shape and min / max / mean / rms to stderr when enabled.
pub struct Debug {
    enabled: bool,
    layer: Option<usize>,
    host: Vec<f32>,
}

impl Debug {
    /// Enabled by the environment variable `RUSTORCH_DEBUG` (any value but `0` or empty).
    pub fn from_env() -> Debug {
        let enabled = std::env::var("RUSTORCH_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0");
        Debug {
            enabled,
            layer: None,
            host: Vec::new(),
        }
    }

    pub fn disabled() -> Debug {
        Debug {
            enabled: false,
            layer: None,
            host: Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn layer(&mut self, il: usize) {
        self.layer = Some(il);
    }

    pub fn layer_end(&mut self) {
        self.layer = None;
    }

    /// Shows `n` rows of width `width` of `buf` under `name`.
    pub fn show<B: Backend>(
        &mut self,
        b: &mut B,
        name: &str,
        buf: &B::Buf,
        n: usize,
        width: usize,
    ) -> Result<(), ModelError> {
        if !self.enabled {
            return Ok(());
        }
        self.host.resize(n * width, 0.0);
        b.read(buf, 0, &mut self.host)?;
        let (mut min, mut max, mut sum, mut sq) = (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0f64);
        for &v in &self.host {
            min = min.min(v);
            max = max.max(v);
            sum += v as f64;
            sq += (v as f64) * (v as f64);
        }
        let len = self.host.len().max(1) as f64;
        let label = match self.layer {
            Some(il) => format!("{name}-{il}"),
            None => name.to_string(),
        };
        eprintln!(
            "[debug] {label:<18} [{n}, {width}]  min {min:>11.5}  max {max:>11.5}  mean {:>11.6}  rms {:>11.6}",
            sum / len,
            (sq / len).sqrt()
        );
        Ok(())
    }
}
