namespace Mobius.Model.Diffusion;

/// <summary>
/// The DDPM forward process: linear betas from 0.00085 to 0.012 over 1000 steps, epsilon prediction.
/// Cumulative products are computed in double.
/// </summary>
public sealed class NoiseSchedule
{
    /// <summary>Creates the schedule.</summary>
    public NoiseSchedule(int steps = 1000, double betaStart = 0.00085, double betaEnd = 0.012)
    {
        if (steps < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(steps), "at least two diffusion steps.");
        }

        Steps = steps;
        AlphasCumprod = new double[steps];
        double prod = 1;
        for (int t = 0; t < steps; t++)
        {
            double beta = betaStart + (betaEnd - betaStart) * t / (steps - 1);
            prod *= 1 - beta;
            AlphasCumprod[t] = prod;
        }
    }

    /// <summary>Number of diffusion steps.</summary>
    public int Steps { get; }

    /// <summary>alpha-bar_t, the fraction of signal variance left at step t.</summary>
    public double[] AlphasCumprod { get; }

    /// <summary>
    /// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per sample: sample i of <paramref name="x0"/> (each
    /// <paramref name="sampleSize"/> values) uses timestep <paramref name="timesteps"/>[i].
    /// </summary>
    public float[] AddNoise(ReadOnlySpan<float> x0, ReadOnlySpan<float> noise, ReadOnlySpan<int> timesteps, int sampleSize)
    {
        var xt = new float[x0.Length];
        for (int i = 0; i < timesteps.Length; i++)
        {
            double ab = AlphasCumprod[timesteps[i]];
            float a = (float)Math.Sqrt(ab), b = (float)Math.Sqrt(1 - ab);
            for (int j = i * sampleSize; j < (i + 1) * sampleSize; j++)
            {
                xt[j] = a * x0[j] + b * noise[j];
            }
        }

        return xt;
    }

    /// <summary>
    /// Gaussian noise for <paramref name="clips"/> clips of <paramref name="frames"/> images of
    /// <paramref name="imageSize"/> values whose frames are correlated with coefficient
    /// <paramref name="correlation"/>: eps_f = sqrt(rho) eps_shared + sqrt(1 - rho) eps_f (each frame still
    /// standard normal). This is the mixed noise prior of PYoCo (Ge et al., 2023): video models fine-tuned
    /// from image models learn coherent frames much faster when the noise of a clip's frames is
    /// correlated. Training and sampling must use the same prior. rho = 0 is independent noise.
    /// </summary>
    public static float[] ClipNoise(Random rng, int clips, int frames, int imageSize, float correlation)
    {
        var noise = Mobius.Engine.NN.Init.Normal(rng, (long)clips * frames * imageSize, 1f);
        if (correlation <= 0 || frames == 1)
        {
            return noise;
        }

        var shared = Mobius.Engine.NN.Init.Normal(rng, (long)clips * imageSize, 1f);
        float a = MathF.Sqrt(correlation), b = MathF.Sqrt(1 - correlation);
        for (int c = 0; c < clips; c++)
        {
            for (int f = 0; f < frames; f++)
            {
                int offset = (c * frames + f) * imageSize;
                for (int i = 0; i < imageSize; i++)
                {
                    noise[offset + i] = a * shared[c * imageSize + i] + b * noise[offset + i];
                }
            }
        }

        return noise;
    }

    /// <summary>Evenly spaced DDIM timesteps, descending (for example 960, 920, ..., 0 for 25 steps).</summary>
    public int[] DdimTimesteps(int count)
    {
        if (count < 1 || count > Steps)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"DDIM steps must be 1..{Steps}.");
        }

        int stride = Steps / count;
        return Enumerable.Range(0, count).Select(i => i * stride).Reverse().ToArray();
    }
}
