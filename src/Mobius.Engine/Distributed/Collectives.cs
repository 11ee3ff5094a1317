namespace Mobius.Engine.Distributed;

/// <summary>
/// Collective operations across the ranks of a data-parallel run: each rank is one replica of a model on its own
/// backend, and a collective takes, for every rank, the same list of tensors (the same shapes, in the same order),
/// the way NCCL's grouped calls take one buffer per device. Every rank ends with the same bits.
/// </summary>
public interface ICollectives
{
    /// <summary>Short name for reports: "host".</summary>
    string Name { get; }

    /// <summary>
    /// Replaces tensor i of every rank by the mean over the ranks of tensor i: summed in rank order (rank 0 first),
    /// then multiplied by 1 / ranks, so a data-parallel step takes the update gradient accumulation over the same
    /// batches would.
    /// </summary>
    /// <param name="byRank">One list per rank, each of the same length; tensor i has one shape on every rank; fp32.</param>
    void AllReduceMean(IReadOnlyList<IReadOnlyList<Tensor>> byRank);

    /// <summary>Copies tensor i of rank <paramref name="root"/> into tensor i of every other rank.</summary>
    void Broadcast(IReadOnlyList<IReadOnlyList<Tensor>> byRank, int root = 0);
}

/// <summary>
/// Collectives staged through host memory: each rank's tensor is copied to the host, reduced there and copied
/// back. Any backend will do (a copy is a plain memory copy on the CPU backend, a transfer on a device); it is the
/// in-process implementation for ranks that share a machine's memory, and the reference a device implementation
/// (NCCL) is checked against. The all-reduce goes in buckets (<see cref="BucketBytes"/>): the tensors of a bucket are
/// gathered into one buffer on each rank and move in one transfer each way, where one transfer per tensor would
/// cost a device a synchronisation per tensor. One caller at a time.
/// </summary>
public sealed class HostCollectives : ICollectives
{
    private float[] _sum = [];
    private float[] _part = [];
    private long _bucketBytes = CollectiveBuckets.DefaultBytes;

    /// <inheritdoc />
    public string Name => "host";

    /// <summary>The all-reduce's bucket size (<see cref="CollectiveBuckets"/>; default 32 MiB). The same bits whatever it is.</summary>
    public long BucketBytes
    {
        get => _bucketBytes;
        set => _bucketBytes = value >= 4 && value / 4 <= int.MaxValue ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "a bucket holds 1 to 2^31 - 1 floats.");
    }

    /// <summary>The transfers each rank made each way in the last <see cref="AllReduceMean"/>: one per bucket.</summary>
    public int LastTransfers { get; private set; }

    /// <inheritdoc />
    public void AllReduceMean(IReadOnlyList<IReadOnlyList<Tensor>> byRank)
    {
        int ranks = CollectiveArguments.Check(byRank, "AllReduceMean");
        if (ranks == 1)
        {
            return;
        }

        LastTransfers = CollectiveBuckets.Reduce(byRank, _bucketBytes, perRank => Reduce(perRank, ranks));
    }

    /// <summary>One tensor per rank replaced by their mean: summed in rank order, then scaled.</summary>
    private void Reduce(IReadOnlyList<Tensor> perRank, int ranks)
    {
        float scale = 1f / ranks;
        int n = checked((int)perRank[0].Numel);
        var sum = Buffer(ref _sum, n);
        var part = Buffer(ref _part, n);
        perRank[0].Backend.CopyToHost(perRank[0], sum);
        for (int r = 1; r < ranks; r++)
        {
            perRank[r].Backend.CopyToHost(perRank[r], part);
            for (int k = 0; k < n; k++)
            {
                sum[k] += part[k];
            }
        }

        for (int k = 0; k < n; k++)
        {
            sum[k] *= scale;
        }

        for (int r = 0; r < ranks; r++)
        {
            perRank[r].Backend.CopyFromHost(sum, perRank[r]);
        }
    }

    /// <inheritdoc />
    public void Broadcast(IReadOnlyList<IReadOnlyList<Tensor>> byRank, int root = 0)
    {
        int ranks = CollectiveArguments.Check(byRank, "Broadcast", root);

        for (int i = 0; i < byRank[root].Count; i++)
        {
            var source = byRank[root][i];
            var values = Buffer(ref _sum, checked((int)source.Numel));
            source.Backend.CopyToHost(source, values);
            for (int r = 0; r < ranks; r++)
            {
                if (r != root)
                {
                    byRank[r][i].Backend.CopyFromHost(values, byRank[r][i]);
                }
            }
        }
    }

    private static Span<float> Buffer(ref float[] buffer, int n)
    {
        if (buffer.Length < n)
        {
            buffer = new float[n];
        }

        return buffer.AsSpan(0, n);
    }
}

/// <summary>
/// How an all-reduce cuts a rank's tensors into buckets: runs of consecutive tensors whose bytes fit
/// <c>bucketBytes</c> together, each moved or reduced as one flat buffer (<see cref="IBackend.CopyMulti"/>); a tensor
/// as large or larger is a bucket of its own.
/// </summary>
public static class CollectiveBuckets
{
    /// <summary>The default bucket: 32 MiB.</summary>
    public const long DefaultBytes = 32L << 20;

    /// <summary>The buckets of <paramref name="tensors"/>, as [start, end) index ranges in order.</summary>
    public static IReadOnlyList<(int Start, int End)> Of(IReadOnlyList<Tensor> tensors, long bucketBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bucketBytes, 4);
        var buckets = new List<(int, int)>();
        for (int start = 0; start < tensors.Count;)
        {
            int end = start + 1;
            long bytes = tensors[start].Bytes;
            while (end < tensors.Count && bytes + tensors[end].Bytes <= bucketBytes)
            {
                bytes += tensors[end++].Bytes;
            }

            buckets.Add((start, end));
            start = end;
        }

        return buckets;
    }

    /// <summary>
    /// Runs <paramref name="reduce"/> once per bucket of <paramref name="byRank"/>'s tensors, on one tensor per rank:
    /// a bucket's only tensor itself, or its tensors gathered into a flat buffer on each rank's backend
    /// (<see cref="IBackend.CopyMulti"/>), scattered back after <paramref name="reduce"/> and freed. Returns the buckets.
    /// </summary>
    public static int Reduce(IReadOnlyList<IReadOnlyList<Tensor>> byRank, long bucketBytes, Action<IReadOnlyList<Tensor>> reduce)
    {
        var buckets = Of(byRank[0], bucketBytes);
        foreach (var (start, end) in buckets)
        {
            if (end - start == 1)
            {
                reduce([.. byRank.Select(rank => rank[start])]);
                continue;
            }

            var flats = new Tensor?[byRank.Count];
            try
            {
                int n = checked((int)Elements(byRank[0], start, end));
                for (int r = 0; r < byRank.Count; r++)
                {
                    var backend = byRank[r][start].Backend;
                    flats[r] = Tensor.Empty(backend, new Shape(n), MemoryCategory.Workspace);
                    backend.CopyMulti(Slice(byRank[r], start, end), flats[r]!, gather: true);
                }

                reduce(flats!);
                for (int r = 0; r < byRank.Count; r++)
                {
                    byRank[r][start].Backend.CopyMulti(Slice(byRank[r], start, end), flats[r]!, gather: false);
                }
            }
            finally
            {
                // On a device, stream-ordered: a block freed here is reused only by work queued after the copies back.
                foreach (var f in flats)
                {
                    f?.Dispose();
                }
            }
        }

        return buckets.Count;
    }

    /// <summary>Tensors <paramref name="start"/> to <paramref name="end"/> - 1 of a list.</summary>
    public static Tensor[] Slice(IReadOnlyList<Tensor> tensors, int start, int end) => [.. Enumerable.Range(start, end - start).Select(i => tensors[i])];

    /// <summary>Elements of tensors <paramref name="start"/> to <paramref name="end"/> - 1.</summary>
    public static long Elements(IReadOnlyList<Tensor> tensors, int start, int end) => Enumerable.Range(start, end - start).Sum(i => tensors[i].Numel);
}

/// <summary>The argument checks every <see cref="ICollectives"/> makes before it moves anything.</summary>
public static class CollectiveArguments
{
    /// <summary>Checks the lists line up (rank by rank, tensor by tensor) and returns the number of ranks.</summary>
    public static int Check(IReadOnlyList<IReadOnlyList<Tensor>> byRank, string op, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(byRank);
        if (byRank.Count == 0)
        {
            throw new ArgumentException($"{op} needs at least one rank.", nameof(byRank));
        }

        int count = byRank[0].Count;
        for (int r = 0; r < byRank.Count; r++)
        {
            if (byRank[r].Count != count)
            {
                throw new ArgumentException($"{op}: rank {r} gives {byRank[r].Count} tensors, rank 0 gives {count}.", nameof(byRank));
            }

            for (int i = 0; i < count; i++)
            {
                var t = byRank[r][i];
                if (t.DType != DType.Float32)
                {
                    throw new ArgumentException($"{op}: tensor {i} of rank {r} is {t.DType.Name()}; collectives take fp32.", nameof(byRank));
                }

                if (t.Shape != byRank[0][i].Shape)
                {
                    throw new ShapeMismatchException(op, $"tensor {i} is {t.Shape} on rank {r} and {byRank[0][i].Shape} on rank 0.");
                }
            }
        }

        if (root < 0 || root >= byRank.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(root), $"the root must be a rank, 0 to {byRank.Count - 1}; got {root}.");
        }

        return byRank.Count;
    }
}
