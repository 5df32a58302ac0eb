// The `weft` command-line tool: one binary, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/env.h"
#include "runtime/bench.h"
#include "runtime/launcher.h"
#include "runtime/topo_cli.h"
#ifdef WEFT_WITH_GRPC
#include "scheduler/scheduler_cli.h"
#endif
#include "runtime/planner/planner.h"
#include "runtime/train/train_command.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: weft <command> [args]\n"
               "\n"
               "commands:\n"
               "  run -n N [--transport T] -- PROGRAM ARGS   launch N local ranks\n"
               "  bench COLLECTIVE [options]                 nccl-tests-style benchmark (run on every rank)\n"
               "  plan --model M --cluster C [pins]          choose a pipeline/data-parallel partition\n"
               "  train [options]                            MLP on Fashion-MNIST, pipeline x data parallel\n"
               "  topo [--probe] [--json]                    hosts, transports, link alpha/beta\n"
               "  env [--markdown]                           list every WEFT_* knob (--markdown: as a table)\n"
               "  help                                       this text\n");
#ifdef WEFT_WITH_GRPC
  weft::scheduler::PrintSchedulerUsage(out);
#endif
}

// `weft env [--markdown]`: the knobs as a table; --markdown prints the README's knob table.
int EnvCommand(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "--markdown") {
    std::printf("| knob | default | meaning |\n|---|---|---|\n");
    for (const weft::EnvKnob* k : weft::AllEnvKnobs()) {
      const std::string def = k->default_value();
      std::printf("| `%s` | %s | %s |\n", k->name(), def.empty() ? "—" : def.c_str(), k->doc());
    }
    return 0;
  }
  if (!args.empty()) {
    std::fprintf(stderr, "weft env: unknown argument '%s' (usage: weft env [--markdown])\n",
                 args[0].c_str());
    return 2;
  }
  std::printf("%-32s %-12s %-12s %s\n", "KNOB", "DEFAULT", "VALUE", "DOC");
  for (const weft::EnvKnob* k : weft::AllEnvKnobs()) {
    std::printf("%-32s %-12s %-12s %s\n", k->name(), k->default_value(),
                k->IsSet() ? k->Get().c_str() : "-", k->doc());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "run") return weft::runtime::RunCommand(args);
  if (cmd == "bench") return weft::runtime::BenchCommand(args);
  if (cmd == "plan") return weft::runtime::planner::PlanCommand(args);
  if (cmd == "train") return weft::runtime::train::TrainCommand(args);
  if (cmd == "topo") return weft::runtime::TopoCommand(args);
  if (cmd == "env") return EnvCommand(args);
#ifdef WEFT_WITH_GRPC
  bool handled = false;
  int sched_rc = weft::scheduler::SchedulerCliMain(cmd, args, &handled);
  if (handled) return sched_rc;
#endif
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    Usage(stdout);
    return 0;
  }
  std::fprintf(stderr, "weft: unknown command '%s'\n\n", cmd.c_str());
  Usage(stderr);
  return 2;
}
