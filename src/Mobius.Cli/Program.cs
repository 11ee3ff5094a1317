using System.CommandLine;
using System.Runtime.InteropServices;
using Mobius.Cli;
using Spectre.Console;

// The mobius command. Exit codes (see ExitCodes): 0 success, 1 unexpected failure, 2 bad arguments,
// 3 a missing or damaged input file, 4 unknown words in a prompt (or too many), 5 out of memory, 6 backend not
// available, 130 cancelled (Ctrl-C or SIGTERM).
// Redirected output (logs, CI) gets wide tables instead of wrapping at 80 columns.
if (Console.IsOutputRedirected)
{
    AnsiConsole.Profile.Width = 160;
}

var root = new RootCommand("Mobius: fine-tune text-to-video diffusion models, serial and parallel (Mobius) 3D-UNets side by side.");
foreach (var command in Commands.All())
{
    root.Subcommands.Add(command);
}

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    foreach (var error in parse.Errors)
    {
        Console.Error.WriteLine($"mobius: {error.Message}");
    }

    Console.Error.WriteLine("Run 'mobius --help' (or 'mobius <command> --help') for usage.");
    return ExitCodes.Usage;
}

using var cancel = new CancellationTokenSource();
using var stop = new CancellationTokenSource();

// Ctrl-C and SIGTERM (a scheduler's stop, timeout, kill) interrupt alike. A command that can finish early
// (compare, demo) first stops training and finishes its report with the steps taken; a second interrupt, or
// the first for any other command, cancels (a training run saves its last whole step first).
void Interrupt()
{
    if (Commands.StopsGracefully && !stop.IsCancellationRequested)
    {
        stop.Cancel();
        Console.Error.WriteLine("mobius: stopping training after this step and finishing the report with the steps taken; interrupt again to abort.");
        return;
    }

    cancel.Cancel();
}

Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    Interrupt();
};
using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    Interrupt();
});
Commands.Cancellation = cancel.Token;
Commands.Stop = stop.Token;

try
{
    // Our handler below maps exceptions to exit codes; System.CommandLine's would print a stack trace.
    return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e)
{
    var (code, message) = ExitCodes.Describe(e);
    AnsiConsole.MarkupLine($"[red]mobius:[/] {Markup.Escape(message)}");
    if (code == ExitCodes.Failure && Environment.GetEnvironmentVariable("MOBIUS_DEBUG") == "1")
    {
        Console.Error.WriteLine(e);
    }

    return code;
}
