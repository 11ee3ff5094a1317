namespace Mobius.Engine;

/// <summary>
/// A reference-counted block of backend memory. Tensors and views hold references; the block goes back
/// to its allocator's cache the moment the last reference is released, never at a garbage collector's
/// whim. <see cref="Handle"/> is a host pointer on the cpu backend and a device pointer on cuda.
/// </summary>
public sealed class Storage
{
    private readonly CachingAllocator _allocator;
    private int _refs = 1;
    private int _savedRefs;

    internal Storage(CachingAllocator allocator, IBackend backend, nint handle, long bytes, long blockBytes, MemoryCategory category, int stream = 0)
    {
        _allocator = allocator;
        Stream = stream;
        Backend = backend;
        Handle = handle;
        Bytes = bytes;
        BlockBytes = blockBytes;
        Category = category;
    }

    /// <summary>The backend that owns this memory.</summary>
    public IBackend Backend { get; }

    /// <summary>Host or device address of the first byte.</summary>
    public nint Handle { get; }

    /// <summary>Bytes requested.</summary>
    public long Bytes { get; }

    /// <summary>Bytes of the underlying allocator block (the request rounded up to a size class).</summary>
    internal long BlockBytes { get; }

    /// <summary>The backend stream this block was allocated on (<see cref="IBackend.CurrentStream"/>); its cache is that stream's.</summary>
    internal int Stream { get; }

    /// <summary>
    /// The other streams that have used this block (a bit per stream, <see cref="IBackend.RecordStream"/>): when it is
    /// freed, its next owner on <see cref="Stream"/> waits for the work those streams had queued by then.
    /// </summary>
    internal int UsedOn { get; private set; }

    /// <summary>Notes that <paramref name="stream"/> uses this block too.</summary>
    internal void MarkUsedOn(int stream)
    {
        if (stream != Stream)
        {
            UsedOn |= 1 << stream;
        }
    }

    /// <summary>What the memory is accounted as now.</summary>
    public MemoryCategory Category { get; private set; }

    /// <summary>True once the last reference has been released.</summary>
    public bool IsReleased => Volatile.Read(ref _refs) <= 0;

    /// <summary>True while a tape node keeps this block for backward.</summary>
    internal bool IsSaved => _savedRefs > 0;

    /// <summary>Number of live references (tensors and views).</summary>
    internal int RefCount => Volatile.Read(ref _refs);

    /// <summary>The tape's attribution of this block while it is saved for backward.</summary>
    internal string? SavedKind { get; set; }

    /// <summary>
    /// Narrower copies (bf16 or int8 blocks) of windows of this block (element offset, count) that tape nodes keep for
    /// backward in its place (<see cref="Autograd.Tape.SavedActivations"/>). A storage object is never reused for
    /// another allocation, so the copies stay this block's values even after the block itself is released.
    /// </summary>
    private Dictionary<(long Offset, long Count, DType DType), Storage>? _narrowed;

    /// <summary>The live copy of <paramref name="dtype"/> of the window at <paramref name="offset"/> of <paramref name="count"/> elements, or null.</summary>
    internal Storage? NarrowedCopy(long offset, long count, DType dtype) =>
        _narrowed is not null && _narrowed.TryGetValue((offset, count, dtype), out var s) && !s.IsReleased ? s : null;

    /// <summary>Records <paramref name="copy"/> as the copy of <paramref name="dtype"/> of a window.</summary>
    internal void SetNarrowedCopy(long offset, long count, DType dtype, Storage copy) => (_narrowed ??= new())[(offset, count, dtype)] = copy;

    internal void Retain()
    {
        if (Interlocked.Increment(ref _refs) <= 1)
        {
            throw new InvalidOperationException("Retain on a released storage.");
        }
    }

    internal void Release()
    {
        int left = Interlocked.Decrement(ref _refs);
        if (left == 0)
        {
            _allocator.Free(this);
        }
        else if (left < 0)
        {
            throw new InvalidOperationException("Storage released more often than retained.");
        }
    }

    /// <summary>Re-accounts the block under another category (for example when gradients are adopted).</summary>
    internal void Reclassify(MemoryCategory category)
    {
        if (category == Category)
        {
            return;
        }

        Backend.Memory.OnReclassify(Bytes, Category, category);
        Category = category;
    }

    /// <summary>Counts a tape reference; the first one turns a temporary into a saved activation.</summary>
    /// <returns>True when this was the first saved reference.</returns>
    internal bool MarkSaved()
    {
        if (++_savedRefs == 1 && Category == MemoryCategory.Temporaries)
        {
            Reclassify(MemoryCategory.SavedActivations);
            return true;
        }

        return false;
    }

    /// <summary>Drops a tape reference; the last one turns a saved activation back into a temporary.</summary>
    /// <returns>True when this was the last saved reference of a block that was counted as saved.</returns>
    internal bool UnmarkSaved()
    {
        if (--_savedRefs == 0 && Category == MemoryCategory.SavedActivations)
        {
            Reclassify(MemoryCategory.Temporaries);
            return true;
        }

        return false;
    }
}
