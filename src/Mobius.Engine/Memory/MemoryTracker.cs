namespace Mobius.Engine;

/// <summary>
/// Current and peak bytes in use, by <see cref="MemoryCategory"/>, for one backend. Every allocation,
/// release and re-classification goes through here, so the numbers are exact at every moment; the
/// breakdown at the moment of the overall peak is kept as well, because "peak by category" is only
/// meaningful as a picture of one moment.
/// </summary>
public sealed class MemoryTracker
{
    private static readonly int CategoryCount = Enum.GetValues<MemoryCategory>().Length;
    private readonly Lock _lock = new();
    private readonly long[] _current = new long[CategoryCount];
    private readonly long[] _peak = new long[CategoryCount];
    private readonly long[] _atPeak = new long[CategoryCount];
    private long _total;
    private long _totalPeak;
    private long _blocks;
    private long _blocksPeak;
    private long _reserved;
    private long _reservedPeak;
    private long _allocations;

    /// <summary>Bytes in use now, all categories.</summary>
    public long CurrentBytes
    {
        get
        {
            lock (_lock)
            {
                return _total;
            }
        }
    }

    /// <summary>Highest <see cref="CurrentBytes"/> since the last <see cref="ResetPeak"/>.</summary>
    public long PeakBytes
    {
        get
        {
            lock (_lock)
            {
                return _totalPeak;
            }
        }
    }

    /// <summary>Bytes in use now in one category.</summary>
    public long Current(MemoryCategory category)
    {
        lock (_lock)
        {
            return _current[(int)category];
        }
    }

    /// <summary>Starts a new peak window at the current usage.</summary>
    public void ResetPeak()
    {
        lock (_lock)
        {
            _totalPeak = _total;
            _blocksPeak = _blocks;
            _reservedPeak = _reserved;
            Array.Copy(_current, _peak, CategoryCount);
            Array.Copy(_current, _atPeak, CategoryCount);
        }
    }

    /// <summary>An immutable picture of the statistics now.</summary>
    public MemorySnapshot Snapshot()
    {
        lock (_lock)
        {
            var cats = Enum.GetValues<MemoryCategory>();
            return new MemorySnapshot(
                CurrentBytes: _total,
                PeakBytes: _totalPeak,
                PeakBlockBytes: _blocksPeak,
                ReservedBytes: _reserved,
                PeakReservedBytes: _reservedPeak,
                Allocations: _allocations,
                Current: cats.ToDictionary(c => c, c => _current[(int)c]),
                Peak: cats.ToDictionary(c => c, c => _peak[(int)c]),
                AtPeak: cats.ToDictionary(c => c, c => _atPeak[(int)c]));
        }
    }

    /// <summary>An allocation of <paramref name="bytes"/>, served by a block of <paramref name="blockBytes"/> (its size class).</summary>
    internal void OnAllocate(long bytes, long blockBytes, MemoryCategory category)
    {
        lock (_lock)
        {
            _allocations++;
            _blocks += blockBytes;
            _blocksPeak = Math.Max(_blocksPeak, _blocks);
            Add(category, bytes);
        }
    }

    internal void OnRelease(long bytes, long blockBytes, MemoryCategory category)
    {
        lock (_lock)
        {
            _blocks -= blockBytes;
            Add(category, -bytes);
        }
    }

    internal void OnReclassify(long bytes, MemoryCategory from, MemoryCategory to)
    {
        if (from == to)
        {
            return;
        }

        lock (_lock)
        {
            _current[(int)from] -= bytes;
            _current[(int)to] += bytes;
            UpdatePeaks();
        }
    }

    /// <summary>Bytes the allocator holds from the system (in use plus cached).</summary>
    internal void OnReserved(long delta)
    {
        lock (_lock)
        {
            _reserved += delta;
            _reservedPeak = Math.Max(_reservedPeak, _reserved);
        }
    }

    private void Add(MemoryCategory category, long bytes)
    {
        _current[(int)category] += bytes;
        _total += bytes;
        UpdatePeaks();
    }

    private void UpdatePeaks()
    {
        for (int i = 0; i < CategoryCount; i++)
        {
            _peak[i] = Math.Max(_peak[i], _current[i]);
        }

        if (_total > _totalPeak)
        {
            _totalPeak = _total;
            Array.Copy(_current, _atPeak, CategoryCount);
        }
    }
}

/// <summary>Memory statistics at one moment; every report in Mobius is made from these.</summary>
/// <param name="CurrentBytes">Bytes in use.</param>
/// <param name="PeakBytes">Highest bytes in use since the peak was reset.</param>
/// <param name="PeakBlockBytes">Highest bytes of the blocks in use since the peak was reset: each allocation rounded up to
/// the caching allocator's size class, what a device must hold for those tensors (cached blocks aside).</param>
/// <param name="ReservedBytes">Bytes held from the system, including the allocator's cache.</param>
/// <param name="PeakReservedBytes">Highest reserved bytes since the peak was reset.</param>
/// <param name="Allocations">Allocation requests served so far.</param>
/// <param name="Current">Bytes in use by category.</param>
/// <param name="Peak">Each category's own peak (these peaks may fall at different moments).</param>
/// <param name="AtPeak">The breakdown by category at the moment of <paramref name="PeakBytes"/>.</param>
public sealed record MemorySnapshot(
    long CurrentBytes,
    long PeakBytes,
    long PeakBlockBytes,
    long ReservedBytes,
    long PeakReservedBytes,
    long Allocations,
    IReadOnlyDictionary<MemoryCategory, long> Current,
    IReadOnlyDictionary<MemoryCategory, long> Peak,
    IReadOnlyDictionary<MemoryCategory, long> AtPeak);
