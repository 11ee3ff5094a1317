namespace Mobius.Data;

/// <summary>
/// SplitMix64: a tiny, fast, well-mixed generator whose output is fixed by its definition (unlike
/// <see cref="Random"/>, whose algorithm may change between runtimes), so clips stay byte-identical.
/// </summary>
internal struct SplitMix(ulong seed)
{
    private ulong _state = seed;

    /// <summary>A well-mixed hash of several integers (order matters).</summary>
    public static ulong Hash(params ReadOnlySpan<long> values)
    {
        ulong h = 0x6A09E667F3BCC909UL;
        foreach (long v in values)
        {
            h = Mix(h ^ Mix((ulong)v + 0x9E3779B97F4A7C15UL));
        }

        return h;
    }

    public ulong Next()
    {
        _state += 0x9E3779B97F4A7C15UL;
        return Mix(_state);
    }

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [lo, hi).</summary>
    public float Range(float lo, float hi) => (float)(lo + (hi - lo) * NextDouble());

    /// <summary>Uniform integer in [0, n).</summary>
    public int Below(int n) => (int)(NextDouble() * n);

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
