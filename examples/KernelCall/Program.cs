// Call one op directly through the backend interface: self-attention over the frames of each pixel
// (our temporal attention kernel on CUDA). See docs/profile.md. Run with --cuda on a GPU.
using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Cpu;

using IBackend backend = args.Contains("--cuda") ? new CudaBackend() : new CpuBackend();
Console.WriteLine($"backend: {backend.Name} on {backend.DeviceName}");

// 64 pixels, 8 frames each, 2 heads of 16 channels: q, k, v are [pixels, frames, heads * headDim].
var shape = new AttentionShape(N: 64, Heads: 2, Lq: 8, Lk: 8, HeadDim: 16, Scale: 1 / MathF.Sqrt(16));
var rng = new Random(1);
Tensor Random(params int[] dims)
{
    var size = new Shape(dims);
    var values = new float[size.Numel];
    for (int i = 0; i < values.Length; i++)
    {
        values[i] = (float)(rng.NextDouble() * 2 - 1);
    }

    return Tensor.FromArray(backend, values, size);
}

using var q = Random(64, 8, 32);
using var k = Random(64, 8, 32);
using var v = Random(64, 8, 32);
using var o = Tensor.Empty(backend, q.Shape);
using var lse = Tensor.Empty(backend, new Shape(64, 2, 8));
backend.TemporalAttentionForward(shape, q, k, v, o, lse);

// The same through the differentiable op, which also records a tape node when inputs need gradients.
using var viaOps = Ops.TemporalAttention(q, k, v, heads: 2);
float[] direct = o.ToArray(), recorded = viaOps.ToArray();
double worst = direct.Zip(recorded, (a, b) => Math.Abs(a - b)).Max();
Console.WriteLine($"o[0, 0, 0..4] = {string.Join(", ", direct.Take(4).Select(x => x.ToString("0.0000")))}; lse[0, 0, 0] = {lse.ToArray()[0]:0.0000}; backend call vs op: max difference {worst}");
return worst == 0 ? 0 : 1;
