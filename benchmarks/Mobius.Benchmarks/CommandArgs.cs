namespace Mobius.Benchmarks;

/// <summary>The options of the benchmark commands (report, alignment, settings): `--name value` pairs.</summary>
internal static class CommandArgs
{
    /// <summary>The value after <paramref name="name"/>, or <paramref name="fallback"/> when it is absent.</summary>
    public static string Get(string[] args, string name, string fallback) =>
        args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
}
