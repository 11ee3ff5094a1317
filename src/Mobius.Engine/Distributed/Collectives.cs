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
/// (NCCL) is checked against. One caller at a time.
/// </summary>
public sealed class HostCollectives : ICollectives
{
    private float[] _sum = [];
    private float[] _part = [];

    /// <inheritdoc />
    public string Name => "host";

    /// <inheritdoc />
    public void AllReduceMean(IReadOnlyList<IReadOnlyList<Tensor>> byRank)
    {
        int ranks = CollectiveArguments.Check(byRank, "AllReduceMean");
        if (ranks == 1)
        {
            return;
        }

        float scale = 1f / ranks;
        for (int i = 0; i < byRank[0].Count; i++)
        {
            int n = checked((int)byRank[0][i].Numel);
            var sum = Buffer(ref _sum, n);
            var part = Buffer(ref _part, n);
            byRank[0][i].Backend.CopyToHost(byRank[0][i], sum);
            for (int r = 1; r < ranks; r++)
            {
                byRank[r][i].Backend.CopyToHost(byRank[r][i], part);
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
                byRank[r][i].Backend.CopyFromHost(sum, byRank[r][i]);
            }
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
