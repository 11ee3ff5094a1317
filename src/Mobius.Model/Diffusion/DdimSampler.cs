using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;

namespace Mobius.Model.Diffusion;

/// <summary>
/// Deterministic DDIM sampling (eta = 0) with classifier-free guidance: the conditional and the
/// unconditional prediction run as one batch, eps = eps_u + g (eps_c - eps_u).
/// </summary>
public sealed class DdimSampler(NoiseSchedule schedule)
{
    /// <summary>
    /// Denoises Gaussian noise (from <paramref name="seed"/>) into latents [B*F, C, H, W].
    /// <paramref name="cond"/> and <paramref name="uncond"/> are text contexts [B*F, L, D].
    /// </summary>
    public float[] Sample(UNet3D unet, Tensor cond, Tensor uncond, int frames, int steps, float guidance, int seed, IProgress<int>? progress = null)
    {
        var c = unet.Config;
        int images = cond.Dim(0);
        var shape = new Shape(images, c.LatentChannels, c.LatentHeight, c.LatentWidth);
        var backend = unet.Backend;
        using var noGrad = Tape.NoGrad();
        var x = Tensor.FromArray(backend, Init.Normal(new Random(seed), shape.Numel, 1f), shape);
        using var context = Ops.Concat(0, cond, uncond);
        var schedule1 = schedule.DdimTimesteps(steps);
        try
        {
            for (int i = 0; i < schedule1.Length; i++)
            {
                int t = schedule1[i];
                double ab = schedule.AlphasCumprod[t];
                double abPrev = i + 1 < schedule1.Length ? schedule.AlphasCumprod[schedule1[i + 1]] : 1.0;
                var timesteps = Enumerable.Repeat(t, 2 * images).ToArray();
                using var doubled = Ops.Concat(0, x, x);
                using var epsBoth = unet.Forward(doubled, timesteps, context, frames);
                using var epsCond = Ops.Narrow(epsBoth, 0, 0, images);
                using var epsUncond = Ops.Narrow(epsBoth, 0, images, images);
                using var eps = Ops.Combine(epsUncond, epsCond, 1 - guidance, guidance);

                // x0 = (x - sqrt(1-ab) eps) / sqrt(ab); x' = sqrt(ab') x0 + sqrt(1-ab') eps
                using var x0 = Ops.Combine(x, eps, (float)(1 / Math.Sqrt(ab)), (float)(-Math.Sqrt(1 - ab) / Math.Sqrt(ab)));
                var next = Ops.Combine(x0, eps, (float)Math.Sqrt(abPrev), (float)Math.Sqrt(1 - abPrev));
                x.Dispose();
                x = next;
                progress?.Report(i + 1);
            }

            return x.ToArray();
        }
        finally
        {
            x.Dispose();
        }
    }
}
