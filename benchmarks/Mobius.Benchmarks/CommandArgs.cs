namespace Mobius.Benchmarks;

/// <summary>The options of the benchmark commands (report, alignment, settings): `--name value` pairs.</summary>
internal static class CommandArgs
{
    /// <summary>The value after <paramref name="name"/>, or <paramref name="fallback"/> when it is absent.</summary>
    public static string Get(string[] args, string name, string fallback) =>
        args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;

    /// <summary>
    /// Checks a command's arguments before it starts work: --help (-h, -?) prints <paramref name="usage"/>
    /// and gives exit code 0; an argument that is neither one of <paramref name="options"/> (each followed by
    /// its value) nor one of <paramref name="flags"/> (on their own) prints what is wrong and the usage and
    /// gives 2. Null when every argument is known.
    /// </summary>
    public static int? Check(string[] args, string usage, string[] options, params string[] flags)
    {
        if (args.Any(a => a is "--help" or "-h" or "-?"))
        {
            Console.WriteLine(usage);
            return 0;
        }

        for (int i = 0; i < args.Length; i += flags.Contains(args[i]) ? 1 : 2)
        {
            string? problem = flags.Contains(args[i]) ? null
                : !options.Contains(args[i]) ? $"unknown option '{args[i]}'"
                : i + 1 >= args.Length ? $"{args[i]} needs a value"
                : null;
            if (problem is not null)
            {
                Console.Error.WriteLine($"{problem}\nusage: {usage}");
                return 2;
            }
        }

        return null;
    }
}
