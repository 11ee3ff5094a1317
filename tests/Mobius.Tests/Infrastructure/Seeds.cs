using Xunit;

namespace Mobius.Tests;

/// <summary>
/// Fresh random seeds for every run; set MOBIUS_TEST_SEED to replay a failing run (the seed is part of
/// every assertion message through <see cref="Rng"/>).
/// </summary>
public static class Seeds
{
    private static readonly int Base = int.TryParse(Environment.GetEnvironmentVariable("MOBIUS_TEST_SEED"), out int s)
        ? s
        : Random.Shared.Next();

    /// <summary>Three seeds per theory, different each run.</summary>
    public static TheoryData<int> Three => new(Base, Base + 1, Base + 2);

    public static int One => Base;

    /// <summary><see cref="Three"/>, each with bf16 and with int8 blocks: the narrow storage types.</summary>
    public static TheoryData<int, Mobius.Engine.DType> ThreeWithNarrowTypes
    {
        get
        {
            var data = new TheoryData<int, Mobius.Engine.DType>();
            foreach (int seed in new[] { Base, Base + 1, Base + 2 })
            {
                data.Add(seed, Mobius.Engine.DType.BFloat16);
                data.Add(seed, Mobius.Engine.DType.Int8Blocks);
            }

            return data;
        }
    }
}

/// <summary>A seeded random source that remembers its seed for failure messages.</summary>
public sealed class Rng(int seed)
{
    private readonly Random _r = new(seed);

    public int Seed { get; } = seed;

    public int Int(int lo, int hiInclusive) => _r.Next(lo, hiInclusive + 1);

    public T Pick<T>(params T[] options) => options[_r.Next(options.Length)];

    /// <summary>Uniform values in [-scale, scale], never all zero.</summary>
    public float[] Uniform(long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++)
        {
            a[i] = (float)((_r.NextDouble() * 2 - 1) * scale);
        }

        a[0] = a[0] == 0 ? scale * 0.5f : a[0];
        return a;
    }

    public int[] Ints(int n, int maxExclusive)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++)
        {
            a[i] = _r.Next(maxExclusive);
        }

        return a;
    }

    public override string ToString() => $"seed {Seed}";
}
