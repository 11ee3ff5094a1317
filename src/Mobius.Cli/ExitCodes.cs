using Mobius.Data;
using Mobius.Engine;

namespace Mobius.Cli;

/// <summary>The exit codes of the mobius command, and the one-line message for each failure.</summary>
public static class ExitCodes
{
    /// <summary>The command did what was asked.</summary>
    public const int Success = 0;

    /// <summary>An unexpected failure (set MOBIUS_DEBUG=1 for the stack trace).</summary>
    public const int Failure = 1;

    /// <summary>Bad arguments: unknown option, unknown config, value out of range.</summary>
    public const int Usage = 2;

    /// <summary>A missing or damaged input: checkpoint, GIF, captions file (a caption with words the model does not know included).</summary>
    public const int BadInput = 3;

    /// <summary>A prompt has words the model's tokenizer does not know, or more words than it takes.</summary>
    public const int UnknownWords = 4;

    /// <summary>The run does not fit in the backend's memory.</summary>
    public const int OutOfMemory = 5;

    /// <summary>The requested backend is not available (no GPU, libraries not found).</summary>
    public const int BackendUnavailable = 6;

    /// <summary>Interrupted with Ctrl-C or SIGTERM (a training run saves its last whole step first).</summary>
    public const int Cancelled = 130;

    /// <summary>Maps an exception to its exit code and a one-line message.</summary>
    public static (int Code, string Message) Describe(Exception e) => e switch
    {
        UsageException u => (Usage, u.Message),
        OperationCanceledException => (Cancelled, "cancelled."),
        UnknownWordsException w => (UnknownWords, w.Message + KnownWords(w.KnownWords)),
        TextTooLongException t => (UnknownWords, t.Message),
        OutOfDeviceMemoryException m => (OutOfMemory, m.Message + " Try a smaller --config or batch, or a device with more memory."),
        DllNotFoundException d => (BackendUnavailable, d.Message),
        BackendUnavailableException b => (BackendUnavailable, b.Message),
        FileNotFoundException f => (BadInput, f.Message),
        DirectoryNotFoundException d => (BadInput, d.Message),
        InvalidDataException d => (BadInput, d.Message),
        DataFormatException d => (BadInput, d.Message),
        NonFiniteException n => (Failure, n.Message + " Lower the learning rate or check the data."),
        _ => (Failure, $"{e.GetType().Name}: {e.Message}"),
    };

    /// <summary>The words a prompt may use, listed when there are few enough to read (the emoji model has 42).</summary>
    internal static string KnownWords(IReadOnlyList<string> known) => known.Count switch
    {
        0 => "",
        <= 80 => $" The model knows {known.Count} words: {string.Join(", ", known.Order(StringComparer.Ordinal))}.",
        _ => $" The model knows {known.Count} words; mobius info --checkpoint FILE lists them.",
    };
}

/// <summary>A command-line value that parses but makes no sense.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>A backend that cannot be used on this machine.</summary>
public sealed class BackendUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
