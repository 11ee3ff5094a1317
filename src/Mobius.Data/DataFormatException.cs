namespace Mobius.Data;

/// <summary>
/// A data file or folder is missing or malformed. The message names the file, and the line where one
/// applies, as "file:line: what is wrong".
/// </summary>
public sealed class DataFormatException : Exception
{
    /// <summary>An error about a whole file or folder.</summary>
    public DataFormatException(string file, string message, Exception? inner = null)
        : base($"{file}: {message}", inner)
    {
        File = file;
        Problem = message;
    }

    /// <summary>An error at one line (1-based) of a text file.</summary>
    public DataFormatException(string file, int line, string message, Exception? inner = null)
        : base($"{file}:{line}: {message}", inner)
    {
        File = file;
        Line = line;
        Problem = message;
    }

    /// <summary>The file or folder at fault.</summary>
    public string File { get; }

    /// <summary>What is wrong, without the location.</summary>
    public string Problem { get; }

    /// <summary>The 1-based line at fault, or null when the error is about the whole file.</summary>
    public int? Line { get; }
}
