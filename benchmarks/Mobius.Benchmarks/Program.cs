using BenchmarkDotNet.Running;
using Mobius.Benchmarks;

// Runs the suites chosen on the command line with BenchmarkDotNet's usual options, for example
//   dotnet run -c Release --project benchmarks/Mobius.Benchmarks -- --filter '*Gemm*'
// (no --filter: an interactive menu). Each suite names its configuration in a [Config] attribute
// (BenchmarkConfig or its own): everything runs in this process, so a self-contained published build runs
// on a machine without the SDK. New suites join the list below.
// `report` runs the standard set and writes benchmarks/results/<date>-<machine>.md (see Report).
if (args.Length > 0 && args[0] == "report")
{
    return Report.Run(args[1..]);
}

// `alignment` compares the loop bridge's gradients with serial's, layer by layer (see Alignment).
if (args.Length > 0 && args[0] == "alignment")
{
    return Alignment.Run(args[1..]);
}

// `frontier` times both topologies at every recompute policy, the cases taking turns (see Frontier).
if (args.Length > 0 && args[0] == "frontier")
{
    return FrontierCommand.Run(args[1..]);
}

// `storage` times both topologies with fp32 and bf16 frozen weights and saved activations, taking turns (see StorageCommand).
if (args.Length > 0 && args[0] == "storage")
{
    return StorageCommand.Run(args[1..]);
}

// `settings` measures what one stage-2 training setting does to loss and samples (see Settings).
if (args.Length > 0 && args[0] == "settings")
{
    return Settings.Run(args[1..]);
}

BenchmarkSwitcher
    .FromTypes([typeof(GemmBenchmarks), typeof(Conv2dBenchmarks), typeof(TemporalConvBenchmarks), typeof(TrainStepBenchmarks), typeof(KernelBenchmarks)])
    .Run(args);
return 0;
