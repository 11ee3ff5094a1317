namespace Mobius.Benchmarks;

/// <summary>The options of the benchmark commands (report, alignment, settings, frontier, storage): `--name value` pairs.</summary>
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

    /// <summary>
    /// The arguments of a command that times training steps: `[--config tiny] [--backend cpu|cuda] [--steps N]
    /// [--warmup 3]`, checked as <see cref="Check"/> does and for a known config and backend. Null with the exit code
    /// to return when the command should not run (help asked for, or bad arguments, said on stderr).
    /// </summary>
    public static (string Config, string Backend, int Steps, int Warmup)? Timing(string[] args, string usage, int defaultSteps, out int exitCode)
    {
        exitCode = 0;
        if (Check(args, usage, ["--config", "--backend", "--steps", "--warmup"]) is { } code)
        {
            exitCode = code;
            return null;
        }

        string config = Get(args, "--config", "tiny");
        string backend = Get(args, "--backend", "cpu");
        if (!int.TryParse(Get(args, "--steps", defaultSteps.ToString(System.Globalization.CultureInfo.InvariantCulture)), System.Globalization.CultureInfo.InvariantCulture, out int steps) || steps < 1
            || !int.TryParse(Get(args, "--warmup", "3"), System.Globalization.CultureInfo.InvariantCulture, out int warmup) || warmup < 0)
        {
            Console.Error.WriteLine($"--steps must be a whole number of at least 1 and --warmup at least 0\nusage: {usage}");
            exitCode = 2;
            return null;
        }

        if (!Mobius.Model.ModelConfig.Presets.Any(p => p.Name == config) || backend is not ("cpu" or "cuda"))
        {
            Console.Error.WriteLine($"unknown config '{config}' or backend '{backend}' (configs: {string.Join(", ", Mobius.Model.ModelConfig.Presets.Select(p => p.Name))}; backends: cpu, cuda)\nusage: {usage}");
            exitCode = 2;
            return null;
        }

        return (config, backend, steps, warmup);
    }
}
