using Mobius.Cuda.Interop;
using Mobius.Engine;
using Mobius.Engine.Distributed;

namespace Mobius.Cuda;

/// <summary>
/// Collectives over NCCL: one communicator per rank's backend, made together (ncclCommInitAll over their devices),
/// each rank's all-reduce or broadcast issued on that rank's stream inside one NCCL group from the calling thread.
/// The tensors never leave the devices and the host does not wait: the optimizer's step queues behind the reduction
/// on each stream. NCCL takes one rank per device; with ranks sharing a device use <see cref="HostCollectives"/>
/// (the simulated driver's NCCL allows it, so tests can run two ranks on its one device). The all-reduce goes in
/// buckets (<see cref="BucketBytes"/>): a model's hundreds of gradients, most of them small, take a few calls rather
/// than one each. Dispose releases the communicators.
/// </summary>
public sealed class NcclCollectives : ICollectives, IDisposable
{
    private readonly CudaBackend[] _backends;
    private readonly nint[] _comms;
    private bool _disposed;

    /// <summary>Makes a communicator for each backend, rank r for <paramref name="ranks"/>[r].</summary>
    /// <exception cref="DllNotFoundException">NCCL could not be loaded.</exception>
    /// <exception cref="CudaException">NCCL refused (a device twice, say).</exception>
    public unsafe NcclCollectives(IReadOnlyList<CudaBackend> ranks)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        if (ranks.Count == 0)
        {
            throw new ArgumentException("NCCL needs at least one rank.", nameof(ranks));
        }

        _backends = [.. ranks];
        _comms = new nint[ranks.Count];
        Nccl.Check(Nccl.ncclGetVersion(out int version), "ncclGetVersion");
        Version = version;
        var devices = _backends.Select(b => b.Device.Ordinal).ToArray();
        _backends[0].MakeCurrent();
        fixed (nint* comms = _comms)
        fixed (int* devlist = devices)
        {
            int result = Nccl.ncclCommInitAll(comms, devices.Length, devlist);
            CudaBackend.ForgetCurrentContext(); // it visits every device
            Nccl.Check(result, "ncclCommInitAll");
        }
    }

    /// <summary>
    /// The all-reduce's bucket size (default 32 MiB): consecutive tensors whose elements fit are copied into one flat
    /// buffer per rank (one launch), reduced with one call and copied back (one launch); a tensor as large or larger is
    /// reduced in place on its own. The mean of each element is the same either way.
    /// </summary>
    public long BucketBytes
    {
        get => _bucketBytes;
        set => _bucketBytes = value >= 4 && value / 4 <= int.MaxValue ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "a bucket holds 1 to 2^31 - 1 floats.");
    }

    private long _bucketBytes = CollectiveBuckets.DefaultBytes;

    /// <summary>The collective calls each rank issued in the last <see cref="AllReduceMean"/>: one per bucket.</summary>
    public int LastCalls { get; private set; }

    /// <summary>NCCL's version code (major * 10000 + minor * 100 + patch since 2.9).</summary>
    public int Version { get; }

    /// <inheritdoc />
    public string Name => $"nccl {Version / 10000}.{Version / 100 % 100}.{Version % 100}";

    /// <summary>
    /// Whether NCCL loads here (the simulated one under MOBIUS_CUDA=sim), with its version code when it does and why
    /// not when it does not.
    /// </summary>
    public static bool Available(out int version, out string? why)
    {
        try
        {
            Nccl.Check(Nccl.ncclGetVersion(out version), "ncclGetVersion");
            why = null;
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            (version, why) = (0, e.Message);
            return false;
        }
    }

    /// <inheritdoc />
    public void AllReduceMean(IReadOnlyList<IReadOnlyList<Tensor>> byRank)
    {
        int ranks = CollectiveArguments.Check(byRank, "AllReduceMean");
        CheckRanks(byRank, ranks, "ncclAllReduce");
        LastCalls = CollectiveBuckets.Reduce(byRank, _bucketBytes,
            perRank => Grouped([.. perRank.Select(t => (IReadOnlyList<Tensor>)[t])], ranks, 0, "ncclAllReduce", AllReduceAvg));
    }

    private static int AllReduceAvg(Tensor t, nint comm, nint stream, int root) =>
        Nccl.ncclAllReduce(CudaBackend.Ptr(t), CudaBackend.Ptr(t), (nuint)t.Numel, Nccl.Float32, Nccl.Avg, comm, stream);

    /// <inheritdoc />
    public void Broadcast(IReadOnlyList<IReadOnlyList<Tensor>> byRank, int root = 0) =>
        Grouped(byRank, CollectiveArguments.Check(byRank, "Broadcast", root), root, "ncclBroadcast",
            (t, comm, stream, r) => Nccl.ncclBroadcast(CudaBackend.Ptr(t), CudaBackend.Ptr(t), (nuint)t.Numel, Nccl.Float32, r, comm, stream));

    /// <summary>Issues <paramref name="call"/> for every tensor of every rank, in place, inside one NCCL group.</summary>
    private void Grouped(IReadOnlyList<IReadOnlyList<Tensor>> byRank, int ranks, int root, string name, Func<Tensor, nint, nint, int, int> call)
    {
        CheckRanks(byRank, ranks, name);
        Nccl.Check(Nccl.ncclGroupStart(), "ncclGroupStart");
        int failed = 0;
        try
        {
            for (int i = 0; i < byRank[0].Count && failed == 0; i++)
            {
                for (int r = 0; r < ranks && failed == 0; r++)
                {
                    _backends[r].MakeCurrent();
                    failed = call(byRank[r][i], _comms[r], _backends[r].Stream, root);
                }
            }
        }
        finally
        {
            int ended = Nccl.ncclGroupEnd();
            CudaBackend.ForgetCurrentContext(); // the group's launches visit every rank's device
            Nccl.Check(failed, name);
            Nccl.Check(ended, "ncclGroupEnd");
        }
    }

    private void CheckRanks(IReadOnlyList<IReadOnlyList<Tensor>> byRank, int ranks, string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (ranks != _backends.Length)
        {
            throw new ArgumentException($"{name}: {ranks} ranks given to a communicator of {_backends.Length}.", nameof(byRank));
        }

        for (int r = 0; r < ranks; r++)
        {
            if (byRank[r].FirstOrDefault(t => !ReferenceEquals(t.Backend, _backends[r])) is { } stray)
            {
                throw new ArgumentException($"{name}: rank {r}'s {stray.Describe()} is not on that rank's backend.", nameof(byRank));
            }
        }
    }

    /// <summary>Releases the communicators.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var comm in _comms.Where(c => c != 0))
        {
            Nccl.ncclCommDestroy(comm);
        }

        CudaBackend.ForgetCurrentContext();
    }
}
