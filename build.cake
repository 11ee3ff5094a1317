// Build script (Cake 7, a local tool: `dotnet tool restore && dotnet cake --target=<Target>`).
// Targets: Build, Test, Pack (NuGet packages to artifacts/packages), Examples (build and run examples/
// against those packages), Peers (installs the PyTorch peer), Bench (the benchmark report), GpuPack.

var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");

void Dotnet(string arguments)
{
    Information($"dotnet {arguments}");
    var exit = StartProcess("dotnet", new ProcessSettings { Arguments = arguments });
    if (exit != 0)
    {
        throw new CakeException($"dotnet {arguments} failed with exit code {exit}.");
    }
}

Task("Build")
    .Does(() => Dotnet($"build Mobius.sln -c {configuration}"));

Task("Test")
    .IsDependentOn("Build")
    .Does(() => Dotnet($"test --project tests/Mobius.Tests -c {configuration} --no-build"));

Task("Pack")
    .Does(() =>
    {
        // A fresh prerelease version per pack, so that the examples never restore a stale cached copy.
        CleanDirectory("artifacts/packages");
        Dotnet($"pack Mobius.sln -c {configuration} -o artifacts/packages --version-suffix ci.{DateTime.UtcNow:yyyyMMddHHmmss}");
    });

Task("Examples")
    .IsDependentOn("Pack")
    .Does(() =>
    {
        Dotnet("run --project examples/KernelCall -c Release");
        Dotnet("run --project examples/FineTune -c Release");
        Dotnet("run --project examples/DataParallel -c Release");
    });

Task("Peers")
    .Does(() =>
    {
        // Debian's PyTorch 1.13 (CPU) with OpenBLAS: the peer of the benchmark report. Not needed by the tests.
        var exit = StartProcess("sh", new ProcessSettings { Arguments = "-c \"apt-get install -y python3-torch libopenblas0-pthread\"" });
        if (exit != 0)
        {
            throw new CakeException("installing python3-torch failed (run as root, or install it yourself).");
        }
    });

Task("Bench")
    .Does(() => Dotnet($"run -c {configuration} --project benchmarks/Mobius.Benchmarks -- report"));

Task("GpuPack")
    .Does(() =>
    {
        var exit = StartProcess("bash", new ProcessSettings { Arguments = "scripts/gpu-pack.sh" });
        if (exit != 0)
        {
            throw new CakeException("scripts/gpu-pack.sh failed.");
        }
    });

RunTarget(target);
