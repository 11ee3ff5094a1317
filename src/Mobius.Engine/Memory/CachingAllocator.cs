namespace Mobius.Engine;

/// <summary>The raw memory of a backend: what the caching allocator asks for when its cache has no block.</summary>
internal interface IRawMemory
{
    /// <summary>Allocates a block; returns 0 when the device is out of memory.</summary>
    nint Alloc(long bytes);

    /// <summary>Returns a block to the system.</summary>
    void Free(nint handle, long bytes);

    /// <summary>Fills a block with a bit pattern that reads as NaN (detects reads of memory never written).</summary>
    void Poison(nint handle, long bytes);

    /// <summary>The stream new work is queued on (0 on a backend with one queue).</summary>
    int Stream => 0;

    /// <summary>
    /// Marks the work queued so far on each stream of the bit mask <paramref name="streams"/>; <see cref="Wait"/> makes
    /// the current stream wait for it. Null when there is nothing to wait for.
    /// </summary>
    object? Fence(int streams) => null;

    /// <summary>Makes the current stream wait for a fence; the fence is spent.</summary>
    void Wait(object fence)
    {
    }

    /// <summary>Spends a fence without waiting (its block is going back to the system).</summary>
    void Drop(object fence)
    {
    }
}

/// <summary>
/// A caching allocator: freed blocks stay cached by size class and are handed out again, so a training
/// step that allocates the same shapes every time touches the system allocator only in its first step
/// (fresh memory costs page faults on the host and cuMemAlloc's synchronisation on a GPU).
/// Size classes are multiples of 512 bytes up to 1 MiB, then eight steps per power of two up to 16 MiB
/// (a block wastes at most 12.5% of its size), then multiples of 2 MiB, the CUDA driver's own granularity
/// for large allocations: a large block wastes under 2 MiB. Eight classes per octave all the way up wasted
/// about 6% of a large batch's memory (8.3 GiB at an ms256 batch of 33 on an H200: the run stopped out of
/// memory at a batch its plan fitted). Statistics count requested bytes; the reserved figure counts whole
/// blocks, cached ones included.
/// On a backend with several streams each stream has a cache of its own, as PyTorch's allocator does: a block
/// freed on stream S goes back to S's cache and is handed out again only to work on S, which the stream itself
/// orders after every earlier use. A block that other streams used too (<see cref="Storage.UsedOn"/>) carries a
/// fence, the work those streams had queued when it was freed, and its next owner's stream waits for that fence
/// before the block is handed out: the device never writes a block that another stream may still read.
/// A stream's cache lends too: once stream T waits for an event of stream F (<see cref="Ordered"/>), every block F had
/// freed by the time the event was recorded is past all of F's work on it, so T may take it when its own cache has
/// none of the size. Without this each stream's cache would keep blocks the other could use, and the reserved bytes
/// would grow by what the smaller stream's cache holds.
/// </summary>
internal sealed class CachingAllocator : IDisposable
{
    private readonly IRawMemory _raw;
    private readonly IBackend _backend;
    // Per stream and size class, oldest first: the own stream takes the newest (the warmest), a borrower the oldest.
    private readonly Dictionary<(int Stream, long Block), List<(nint Handle, object? Fence, long Freed)>> _cache = new();
    // (to, from) -> the last free of stream `from` that stream `to` is ordered after.
    private readonly Dictionary<(int To, int From), long> _ordered = new();
    private long _frees;
    private readonly Lock _lock = new();
    private long _cachedBytes;

    public CachingAllocator(IRawMemory raw, IBackend backend)
    {
        _raw = raw;
        _backend = backend;
    }

    /// <summary>Fill every block handed out with NaN bits (a debugging aid, on in the test suite).</summary>
    public bool PoisonAllocations { get; set; }

    /// <summary>Bytes held in the cache, not in use.</summary>
    public long CachedBytes
    {
        get
        {
            lock (_lock)
            {
                return _cachedBytes;
            }
        }
    }

    /// <summary>The size classes' step from 16 MiB up: 2 MiB.</summary>
    public const long LargeStep = 2L << 20;

    public static long SizeClass(long bytes)
    {
        if (bytes <= 0)
        {
            return 512;
        }

        if (bytes <= 1 << 20)
        {
            return (bytes + 511) & ~511L;
        }

        // Eight classes per power of two (round up to a multiple of 2^(floor(log2)-3)), the step capped at 2 MiB.
        int log = 63 - (int)long.LeadingZeroCount(bytes - 1);
        long step = Math.Min(1L << (log - 3), LargeStep);
        return (bytes + step - 1) & ~(step - 1);
    }

    public Storage Allocate(long bytes, MemoryCategory category)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long block = SizeClass(bytes);
        int stream = _raw.Stream;
        nint handle = 0;
        object? fence = null;
        lock (_lock)
        {
            if (_cache.TryGetValue((stream, block), out var own) && own.Count > 0)
            {
                (handle, fence, _) = own[^1];
                own.RemoveAt(own.Count - 1);
                _cachedBytes -= block;
            }
            else
            {
                foreach (var ((to, from), freed) in _ordered)
                {
                    if (to == stream && _cache.TryGetValue((from, block), out var lender) && lender.Count > 0 && lender[0].Freed <= freed)
                    {
                        (handle, fence, _) = lender[0]; // freed before the event this stream waited for
                        lender.RemoveAt(0);
                        _cachedBytes -= block;
                        break;
                    }
                }
            }
        }

        if (fence is not null)
        {
            _raw.Wait(fence); // another stream may still read the block: this stream waits for that work first
        }

        if (handle == 0)
        {
            handle = _raw.Alloc(block);
            if (handle == 0)
            {
                // Out of memory: give the cache back and try once more before failing.
                EmptyCache();
                handle = _raw.Alloc(block);
                if (handle == 0)
                {
                    var s = _backend.Memory.Snapshot();
                    throw new OutOfDeviceMemoryException(_backend.Name, bytes, s.CurrentBytes, s.ReservedBytes);
                }
            }

            _backend.Memory.OnReserved(block);
        }

        if (PoisonAllocations)
        {
            _raw.Poison(handle, block);
        }

        _backend.Memory.OnAllocate(bytes, block, category);
        return new Storage(this, _backend, handle, bytes, block, category, stream);
    }

    public void Free(Storage storage)
    {
        _backend.Memory.OnRelease(storage.Bytes, storage.BlockBytes, storage.Category);
        object? fence = storage.UsedOn != 0 ? _raw.Fence(storage.UsedOn) : null;
        lock (_lock)
        {
            var key = (storage.Stream, storage.BlockBytes);
            if (!_cache.TryGetValue(key, out var list))
            {
                list = [];
                _cache[key] = list;
            }

            list.Add((storage.Handle, fence, ++_frees));
            _cachedBytes += storage.BlockBytes;
        }
    }

    /// <summary>The number of frees so far: what an event recorded now follows.</summary>
    public long Frees
    {
        get
        {
            lock (_lock)
            {
                return _frees;
            }
        }
    }

    /// <summary>
    /// Stream <paramref name="to"/> now waits for an event of stream <paramref name="from"/> recorded when
    /// <paramref name="frees"/> blocks had been freed (<see cref="Frees"/>): from now on it may take the blocks
    /// <paramref name="from"/> had freed by then.
    /// </summary>
    public void Ordered(int to, int from, long frees)
    {
        if (to == from)
        {
            return;
        }

        lock (_lock)
        {
            _ordered[(to, from)] = Math.Max(frees, _ordered.GetValueOrDefault((to, from)));
        }
    }

    public void EmptyCache()
    {
        lock (_lock)
        {
            foreach (var ((_, size), list) in _cache)
            {
                foreach (var (handle, fence, _) in list)
                {
                    if (fence is not null)
                    {
                        _raw.Drop(fence);
                    }

                    _raw.Free(handle, size);
                    _backend.Memory.OnReserved(-size);
                }
            }

            _cache.Clear();
            _cachedBytes = 0;
        }
    }

    public void Dispose() => EmptyCache();
}
