//! Run-time selection of goldcrest-core's kernels.

use goldcrest_core::kernels::{CpuFeatures, Kernels};

/// Features of the CPU this program runs on.
pub fn cpu_features() -> CpuFeatures {
    #[allow(unused_mut)]
    let mut f = CpuFeatures::default();
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        f.avx2 = has!("avx2");
        f.fma = has!("fma");
        f.f16c = has!("f16c");
        f.avx512f = has!("avx512f");
        f.avx512bw = has!("avx512bw");
        f.avx512vl = has!("avx512vl");
        f.avx512vnni = has!("avx512vnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        f.neon = std::arch::is_aarch64_feature_detected!("neon");
        f.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    }
    f
}

/// The fastest kernels this CPU supports. Detects once; keep the returned value.
#[allow(unsafe_code)]
pub fn detect() -> Kernels {
    // SAFETY: the features were detected on the CPU that runs this process.
    unsafe { Kernels::from_cpu_features(cpu_features()) }
}

/// [`detect`]ed kernels that split large products across `threads` threads (the calling
/// thread included) of a pool started on the first call for each thread count and kept for
/// the life of the process. `threads` ≤ 1 gives single-threaded kernels.
pub fn detect_with_threads(threads: usize) -> Kernels {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static POOLS: OnceLock<Mutex<HashMap<usize, &'static crate::parallel::Pool>>> = OnceLock::new();
    if threads <= 1 {
        return detect();
    }
    let pool = *POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(threads)
        .or_insert_with(|| crate::parallel::Pool::leak(threads));
    detect().with_parallel(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_at_least_compile_time_choice() {
        let k = detect();
        if cfg!(all(target_arch = "x86_64", target_feature = "avx2")) {
            assert_ne!(k.isa(), goldcrest_core::kernels::Isa::Scalar);
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx2") {
            assert_eq!(k.isa(), goldcrest_core::kernels::Isa::Avx512Vnni);
        }
    }
}
