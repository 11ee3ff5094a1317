using System.Diagnostics;

namespace Mobius.Engine.Profiling;

/// <summary>One op, ready to run repeatedly on a backend: inputs allocated once, outputs overwritten each run.</summary>
public sealed class OpRun : IDisposable
{
    private readonly List<Tensor> _tensors;

    internal OpRun(Action run, double flops, double bytes, List<Tensor> tensors)
    {
        Run = run;
        Flops = flops;
        Bytes = bytes;
        _tensors = tensors;
    }

    /// <summary>Queues one execution of the op.</summary>
    public Action Run { get; }

    /// <summary>Floating-point operations of one execution.</summary>
    public double Flops { get; }

    /// <summary>Bytes one execution must at least read and write.</summary>
    public double Bytes { get; }

    /// <summary>Releases the inputs and outputs.</summary>
    public void Dispose()
    {
        foreach (var t in _tensors)
        {
            t.Dispose();
        }
    }
}

/// <summary>Timing of an <see cref="OpRun"/>.</summary>
/// <param name="Milliseconds">Mean time of one execution (device-synchronised around the batch of runs).</param>
/// <param name="GFlops">Achieved GFLOP/s.</param>
/// <param name="GBytes">Achieved GB/s of the compulsory traffic.</param>
public sealed record OpTiming(double Milliseconds, double GFlops, double GBytes);

/// <summary>
/// A named op workload with a default shape: what `mobius profile` runs (for ncu/nsys sessions) and what
/// the kernel benchmarks time. Shapes default to the tiny model's temporal layers.
/// </summary>
/// <param name="Name">Workload name ("temporal_attention").</param>
/// <param name="Description">What it runs.</param>
/// <param name="Defaults">Default shape parameters.</param>
/// <param name="Create">Allocates inputs for a shape and a direction ("fwd"; "bwd", or for convolutions "bwd_data" and "bwd_filter") on a backend.</param>
public sealed record OpWorkload(string Name, string Description, IReadOnlyDictionary<string, int> Defaults,
    Func<IBackend, IReadOnlyDictionary<string, int>, string, OpRun> Create)
{
    /// <summary>
    /// Runs <paramref name="run"/> <paramref name="iterations"/> times after <paramref name="warmup"/> runs. With
    /// <paramref name="settleSeconds"/> &gt; 0 the warm-up then goes on in rounds of at least 50 ms until two rounds
    /// in a row agree on the time per run to 5 %, after two seconds at least (rounds of the first code agree too) and
    /// for at most settleSeconds: on the CPU backend the JIT recompiles an op's loops in the background, which on a
    /// busy two-core machine took one to two seconds, and until then the op runs at a fraction of its speed.
    /// </summary>
    public static OpTiming Time(IBackend backend, OpRun run, int iterations, int warmup = 3, double settleSeconds = 0)
    {
        for (int i = 0; i < warmup; i++)
        {
            run.Run();
        }

        var warming = Stopwatch.StartNew();
        double previous = double.NaN;
        while (warming.Elapsed.TotalSeconds < settleSeconds)
        {
            backend.Synchronize();
            var round = Stopwatch.StartNew();
            int runs = 0;
            do
            {
                run.Run();
                runs++;
                backend.Synchronize();
            }
            while (round.Elapsed.TotalMilliseconds < 50);

            double perRun = round.Elapsed.TotalMilliseconds / runs;
            if (warming.Elapsed.TotalSeconds >= Math.Min(2.0, settleSeconds) && Math.Abs(perRun - previous) <= 0.05 * previous)
            {
                break;
            }

            previous = perRun;
        }

        backend.Synchronize();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++)
        {
            run.Run();
        }

        backend.Synchronize();
        double ms = clock.Elapsed.TotalMilliseconds / iterations;
        return new OpTiming(ms, run.Flops / ms / 1e6, run.Bytes / ms / 1e6);
    }
}

/// <summary>The workloads, by name.</summary>
public static class OpWorkloads
{
    /// <summary>Every workload.</summary>
    public static IReadOnlyList<OpWorkload> All { get; } =
    [
        new("temporal_attention", "self-attention over frames: q, k, v [n, f, h*d]", Dims(("n", 512), ("h", 2), ("f", 8), ("d", 32)), (b, s, dir) =>
        {
            int n = s["n"], h = s["h"], f = s["f"], d = s["d"];
            var shape = new AttentionShape(n, h, f, f, d, 1f / MathF.Sqrt(d));
            var t = new List<Tensor>();
            var q = R(b, t, n, f, h * d);
            var k = R(b, t, n, f, h * d);
            var v = R(b, t, n, f, h * d);
            var o = R(b, t, n, f, h * d);
            var lse = R(b, t, n, h, f);
            b.TemporalAttentionForward(shape, q, k, v, o, lse);
            double io = 4.0 * q.Numel * 4;
            if (dir == "fwd")
            {
                return new OpRun(() => b.TemporalAttentionForward(shape, q, k, v, o, lse), 4.0 * n * h * f * f * d, io, t);
            }

            var dO = R(b, t, n, f, h * d);
            var dq = R(b, t, n, f, h * d);
            var dk = R(b, t, n, f, h * d);
            var dv = R(b, t, n, f, h * d);
            return new OpRun(() => b.TemporalAttentionBackward(shape, q, k, v, o, lse, dO, dq, dk, dv), 10.0 * n * h * f * f * d, 2 * io, t);
        }),
        new("temporal_conv", "kernel-3 convolution along frames: x [b, f, c, s]", Dims(("b", 2), ("f", 8), ("c", 64), ("s", 256)), (b, s, dir) =>
        {
            var shape = new TemporalConvShape(s["b"], s["f"], s["c"], s["c"], s["s"]);
            var t = new List<Tensor>();
            var x = R(b, t, shape.B * shape.F, shape.Cin, shape.S);
            var w = R(b, t, shape.Cout, shape.Cin, 3);
            var bias = R(b, t, shape.Cout);
            var y = R(b, t, shape.B * shape.F, shape.Cout, shape.S);
            double io = 2.0 * x.Numel * 4;
            if (dir == "fwd")
            {
                return new OpRun(() => b.TemporalConvForward(shape, x, w, bias, y), shape.Flops, io, t);
            }

            if (dir == "bwd_data")
            {
                return new OpRun(() => b.TemporalConvBackwardData(shape, y, w, x), shape.Flops, io, t);
            }

            var dw = R(b, t, shape.Cout, shape.Cin, 3);
            return new OpRun(() => b.TemporalConvBackwardWeight(shape, x, y, dw, bias), shape.Flops, io, t);
        }),
        new("group_norm", "group norm (+SiLU) over a clip: x [n*t, c, s]", Dims(("n", 2), ("t", 8), ("c", 64), ("s", 256), ("g", 8)), (b, s, dir) =>
        {
            var shape = new GroupNormShape(s["n"], s["t"], s["c"], s["s"], s["g"]);
            var t = new List<Tensor>();
            var x = R(b, t, shape.N * shape.T, shape.C, shape.S);
            var gamma = R(b, t, shape.C);
            var beta = R(b, t, shape.C);
            var y = R(b, t, shape.N * shape.T, shape.C, shape.S);
            var mean = R(b, t, shape.N, shape.Groups);
            var rstd = R(b, t, shape.N, shape.Groups);
            b.GroupNormForward(shape, x, gamma, beta, y, mean, rstd, true);
            if (dir == "fwd")
            {
                return new OpRun(() => b.GroupNormForward(shape, x, gamma, beta, y, mean, rstd, true), 10.0 * x.Numel, 2.0 * x.Numel * 4, t);
            }

            var dx = R(b, t, shape.N * shape.T, shape.C, shape.S);
            var dg = R(b, t, shape.C);
            var db = R(b, t, shape.C);
            return new OpRun(() => b.GroupNormBackward(shape, x, gamma, beta, mean, rstd, y, dx, dg, db, true), 20.0 * x.Numel, 3.0 * x.Numel * 4, t);
        }),
        new("attention", "spatial multi-head attention: q [n, l, h*d], k, v [n, lk, h*d]", Dims(("n", 16), ("h", 2), ("l", 256), ("lk", 256), ("d", 32)), (b, s, dir) =>
        {
            int n = s["n"], h = s["h"], l = s["l"], lk = s["lk"], d = s["d"];
            var shape = new AttentionShape(n, h, l, lk, d, 1f / MathF.Sqrt(d));
            var t = new List<Tensor>();
            var q = R(b, t, n, l, h * d);
            var k = R(b, t, n, lk, h * d);
            var v = R(b, t, n, lk, h * d);
            var o = R(b, t, n, l, h * d);
            var lse = R(b, t, n, h, l);
            b.AttentionForward(shape, q, k, v, o, lse);
            if (dir == "fwd")
            {
                return new OpRun(() => b.AttentionForward(shape, q, k, v, o, lse), 4.0 * n * h * l * lk * d, 4.0 * q.Numel * 4, t);
            }

            var dO = R(b, t, n, l, h * d);
            var dq = R(b, t, n, l, h * d);
            var dk = R(b, t, n, lk, h * d);
            var dv = R(b, t, n, lk, h * d);
            return new OpRun(() => b.AttentionBackward(shape, q, k, v, o, lse, dO, dq, dk, dv), 10.0 * n * h * l * lk * d, 8.0 * q.Numel * 4, t);
        }),
        new("conv2d", "3x3 convolution: x [n, c, h, w]", Dims(("n", 16), ("c", 64), ("h", 16), ("w", 16)), (b, s, dir) =>
        {
            var shape = new Conv2dShape(s["n"], s["c"], s["h"], s["w"], s["c"], 3, 1, 1);
            var t = new List<Tensor>();
            var x = R(b, t, shape.N, shape.Cin, shape.H, shape.W);
            var w = R(b, t, shape.Cout, shape.Cin, 3, 3);
            var bias = R(b, t, shape.Cout);
            var y = R(b, t, shape.N, shape.Cout, shape.OutH, shape.OutW);
            double io = 2.0 * x.Numel * 4;
            if (dir == "fwd")
            {
                return new OpRun(() => b.Conv2dForward(shape, x, w, bias, y), shape.Flops, io, t);
            }

            if (dir == "bwd_data")
            {
                return new OpRun(() => b.Conv2dBackwardData(shape, y, w, x), shape.Flops, io, t);
            }

            var dw = R(b, t, shape.Cout, shape.Cin, 3, 3);
            return new OpRun(() => b.Conv2dBackwardFilter(shape, x, y, dw, bias), shape.Flops, io, t);
        }),
        new("geglu", "GEGLU of the feed-forward: x [rows, 2 hidden] to y [rows, hidden]", Dims(("rows", 4096), ("hidden", 128)), (b, s, dir) =>
        {
            int rows = s["rows"], hidden = s["hidden"];
            var t = new List<Tensor>();
            var x = R(b, t, rows, 2 * hidden);
            var y = R(b, t, rows, hidden);
            if (dir == "fwd")
            {
                // About 15 flops an output for the tanh-form gelu and the product; reads x, writes y.
                return new OpRun(() => b.GegluForward(rows, hidden, x, y), 15.0 * y.Numel, 4.0 * (x.Numel + y.Numel), t);
            }

            var dx = R(b, t, rows, 2 * hidden);
            return new OpRun(() => b.GegluBackward(rows, hidden, x, y, dx), 30.0 * y.Numel, 4.0 * (2 * x.Numel + y.Numel), t);
        }),
        new("copy", "y = 1 * x over n floats: the device's streaming bandwidth", Dims(("n", 1 << 24)), (b, s, dir) =>
        {
            var t = new List<Tensor>();
            var x = R(b, t, s["n"]);
            var y = R(b, t, s["n"]);
            return new OpRun(() => b.Scale(x, 1f, y), 0, 8.0 * x.Numel, t);
        }),
        new("gemm", "row-major GEMM C[m, n] = A[m, k] B[k, n]", Dims(("m", 512), ("n", 512), ("k", 512)), (b, s, dir) =>
        {
            var shape = new GemmShape(s["m"], s["n"], s["k"]);
            var t = new List<Tensor>();
            var a = R(b, t, shape.M, shape.K);
            var bb = R(b, t, shape.K, shape.N);
            var c = R(b, t, shape.M, shape.N);
            return new OpRun(() => b.Gemm(shape, 1f, a, bb, 0f, c), shape.Flops, 4.0 * (a.Numel + bb.Numel + c.Numel), t);
        }),
    ];

    /// <summary>The workload named <paramref name="name"/>; throws <see cref="ArgumentException"/> listing the names.</summary>
    public static OpWorkload Get(string name) =>
        All.FirstOrDefault(w => w.Name == name) ?? throw new ArgumentException($"unknown kernel workload '{name}'; known: {string.Join(", ", All.Select(w => w.Name))}.");

    /// <summary>Parses "n=512,h=2" over the workload's defaults.</summary>
    public static Dictionary<string, int> Shape(OpWorkload w, string? spec)
    {
        var shape = new Dictionary<string, int>(w.Defaults);
        foreach (var part in (spec ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = part.Split('=', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2 || !shape.ContainsKey(kv[0]) || !int.TryParse(kv[1], out int v) || v <= 0)
            {
                throw new ArgumentException($"bad shape '{part}' for {w.Name}; its parameters are {string.Join(", ", w.Defaults.Keys)} (positive integers).");
            }

            shape[kv[0]] = v;
        }

        return shape;
    }

    private static Dictionary<string, int> Dims(params (string Key, int Value)[] dims) => dims.ToDictionary(d => d.Key, d => d.Value);

    /// <summary>A tensor of fixed pseudo-random values in [-1, 1], registered for disposal.</summary>
    private static Tensor R(IBackend b, List<Tensor> owned, params int[] dims)
    {
        var shape = new Shape(dims);
        var rng = new Random((int)(shape.Numel % int.MaxValue) ^ (shape.Rank << 24));
        var data = new float[shape.Numel];
        for (long i = 0; i < data.Length; i++)
        {
            data[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        var t = Tensor.FromArray(b, data, shape);
        owned.Add(t);
        return t;
    }
}
