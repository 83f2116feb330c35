//! Rotary position embeddings over the first `rot_dims` of each head
//! (GPT-NeoX / Qwen2 "rotate half" convention), composed from differentiable ops.
//!
//! For pair (i, i + r/2) at position p with θ_i = base^(−2i/r):
//! `x'_i = x_i cos(pθ_i) − x_{i+r/2} sin(pθ_i)`, `x'_{i+r/2} = x_{i+r/2} cos + x_i sin`.

use candle_core::{Device, Result, Tensor, D};

/// Precomputed cos/sin tables `(max_pos, rot_dims)`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    rot_dims: usize,
}

impl Rope {
    pub fn new(rot_dims: usize, base: f64, max_pos: usize, device: &Device) -> Result<Self> {
        let half = rot_dims / 2;
        let mut cos = Vec::with_capacity(max_pos * rot_dims);
        let mut sin = Vec::with_capacity(max_pos * rot_dims);
        for p in 0..max_pos {
            for j in 0..rot_dims {
                let i = j % half;
                let theta = (p as f64) * base.powf(-2.0 * i as f64 / rot_dims as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_pos, rot_dims), device)?,
            sin: Tensor::from_vec(sin, (max_pos, rot_dims), device)?,
            rot_dims,
        })
    }

    /// `x: (batch, pos, head_index, d_head) -> same`, rotating the first `rot_dims`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, t, _, d_head) = x.dims4()?;
        let r = self.rot_dims;
        let cos = self.cos.narrow(0, offset, t)?.unsqueeze(1)?; // (pos, 1, rot)
        let sin = self.sin.narrow(0, offset, t)?.unsqueeze(1)?;
        let rot = x.narrow(D::Minus1, 0, r)?;
        let x1 = rot.narrow(D::Minus1, 0, r / 2)?;
        let x2 = rot.narrow(D::Minus1, r / 2, r / 2)?;
        let rotated_half = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        let out = (rot.broadcast_mul(&cos)? + rotated_half.broadcast_mul(&sin)?)?;
        if r == d_head {
            Ok(out)
        } else {
            Tensor::cat(&[&out, &x.narrow(D::Minus1, r, d_head - r)?], D::Minus1)
        }
    }
}

/// A `Rope` table kept across forward calls and grown (doubling) when a longer
/// sequence arrives, so KV-cached decoding does not rebuild it every token.
#[derive(Debug)]
pub struct RopeCache {
    rot_dims: usize,
    base: f64,
    table: std::sync::Mutex<Option<(usize, Rope)>>,
}

impl RopeCache {
    pub fn new(rot_dims: usize, base: f64) -> Self {
        Self { rot_dims, base, table: std::sync::Mutex::new(None) }
    }

    /// A table covering positions `0..len` (cheap clone of the cached one).
    pub fn get(&self, len: usize, device: &Device) -> Result<Rope> {
        let mut slot = self.table.lock().expect("rope cache lock poisoned");
        match &*slot {
            Some((n, rope)) if *n >= len => Ok(rope.clone()),
            other => {
                let n = len.max(other.as_ref().map_or(0, |(n, _)| 2 * n)).max(64);
                let rope = Rope::new(self.rot_dims, self.base, n, device)?;
                *slot = Some((n, rope.clone()));
                Ok(rope)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_preserves_norm_and_is_identity_at_position_zero() -> Result<()> {
        let dev = Device::Cpu;
        let rope = Rope::new(4, 10000.0, 8, &dev)?;
        let x = Tensor::arange(0f32, 48., &dev)?.reshape((1, 8, 1, 6))?;
        let y = rope.apply(&x, 0)?;
        let n = |t: &Tensor| -> Result<Vec<f32>> { t.sqr()?.sum(D::Minus1)?.flatten_all()?.to_vec1() };
        for (a, b) in n(&x)?.iter().zip(n(&y)?) {
            assert!((a - b).abs() < 1e-3 * a.max(1.0));
        }
        let row0: Vec<f32> = y.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
        assert_eq!(row0, vec![0., 1., 2., 3., 4., 5.]);
        Ok(())
    }

    #[test]
    fn cached_table_matches_a_fresh_one() -> Result<()> {
        let dev = Device::Cpu;
        let cache = RopeCache::new(4, 10000.0);
        let x = Tensor::arange(0f32, 24., &dev)?.reshape((1, 4, 1, 6))?;
        let small = cache.get(10, &dev)?.apply(&x, 3)?; // table of 64 positions
        let grown = cache.get(200, &dev)?.apply(&x, 3)?; // rebuilt at 200
        let fresh = Rope::new(4, 10000.0, 7, &dev)?.apply(&x, 3)?;
        assert_eq!(small.flatten_all()?.to_vec1::<f32>()?, fresh.flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(grown.flatten_all()?.to_vec1::<f32>()?, fresh.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}
