//! Compare GEMM back ends on the training step's shapes (dev tool).
use std::time::Instant;

fn main() {
    let shapes = [(4096, 256, 64), (4096, 64, 256), (256, 64, 4096), (4096, 512, 128), (4096, 128, 512), (512, 128, 4096), (4096, 384, 128)];
    let threads = rayon::current_num_threads();
    for &(m, n, k) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut ts = vec![];
            for _ in 0..10 {
                let t = Instant::now();
                f();
                ts.push(t.elapsed().as_secs_f64());
            }
            ts.sort_by(|a, b| a.partial_cmp(b).unwrap()); ts[ts.len() / 2]
        };
        let t_gemm = time(&mut || unsafe {
            gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(threads))
        });
        let t_faer = time(&mut || unsafe {
            let lhs = faer::MatRef::<f32>::from_raw_parts(a.as_ptr(), m, k, k as isize, 1);
            let rhs = faer::MatRef::<f32>::from_raw_parts(b.as_ptr(), k, n, n as isize, 1);
            let dst = faer::MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), m, n, n as isize, 1);
            faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs, 1.0, faer::Par::rayon(threads));
        });
        let t_faer_cm = time(&mut || unsafe {
            // column-major view of the same row-major product: Cᵀ = Bᵀ·Aᵀ
            let lhs = faer::MatRef::<f32>::from_raw_parts(b.as_ptr(), n, k, 1, n as isize);
            let rhs = faer::MatRef::<f32>::from_raw_parts(a.as_ptr(), k, m, 1, k as isize);
            let dst = faer::MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), n, m, 1, n as isize);
            faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs, 1.0, faer::Par::rayon(threads));
        });
        println!("{m}x{n}x{k}: gemm {:.1} GF/s, faer {:.1} GF/s, faer-colmajor {:.1} GF/s", flop / t_gemm / 1e9, flop / t_faer / 1e9, flop / t_faer_cm / 1e9);
    }
}
