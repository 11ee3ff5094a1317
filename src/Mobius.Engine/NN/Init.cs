namespace Mobius.Engine.NN;

/// <summary>Deterministic parameter initialisers (host-side, from a seeded <see cref="Random"/>).</summary>
public static class Init
{
    /// <summary>Uniform in [-bound, bound].</summary>
    public static float[] Uniform(Random rng, long n, float bound)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++)
        {
            a[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
        }

        return a;
    }

    /// <summary>PyTorch's default for linear and convolution layers: uniform with bound 1/sqrt(fan_in).</summary>
    public static float[] FanIn(Random rng, long n, long fanIn) => Uniform(rng, n, 1f / MathF.Sqrt(fanIn));

    /// <summary>Normal with mean 0 and the given standard deviation (Box-Muller).</summary>
    public static float[] Normal(Random rng, long n, float std)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble();
            double u2 = rng.NextDouble();
            a[i] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }

        return a;
    }

    /// <summary>n copies of one value.</summary>
    public static float[] Constant(long n, float value)
    {
        var a = new float[n];
        Array.Fill(a, value);
        return a;
    }
}
