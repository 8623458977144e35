// vhost-bench: entry point. Parses options, runs the bench and prints one
// JSON line on stdout (see usage() in options.cc for the contract).
#include <csignal>
#include <cstdio>
#include <string>

#include "bench.h"
#include "common.h"
#include "options.h"

using namespace vb;

namespace {

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') out += '\\', out += char(c);
    else if (c < 0x20) out += format("\\u%04x", c);
    else out += char(c);
  }
  return out + "\"";
}

std::string phaseJson(const PhaseResult& p) {
  double secs = p.seconds > 0 ? p.seconds : 1e-9;
  std::string per = "[";
  for (size_t i = 0; i < p.perTargetIos.size(); i++) per += format("%s%llu", i ? "," : "", (unsigned long long)p.perTargetIos[i]);
  per += "]";
  return format(
      "{\"name\":%s,\"ios\":%llu,\"errors\":%llu,\"bytes\":%llu,\"seconds\":%.6f,\"iops\":%.1f,\"mbps\":%.2f,"
      "\"latUs\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"mean\":%.3f,\"min\":%.3f,\"max\":%.3f},"
      "\"frontendCpuUs\":%.0f,\"backendCpuUs\":%.0f,\"kicks\":%llu,\"kickSkips\":%llu,\"calls\":%llu,\"verifiedBytes\":%llu,\"mismatches\":%llu,"
      "\"firstMismatch\":%s,\"firstError\":%s,\"perTargetIos\":%s}",
      jsonString(p.name).c_str(), (unsigned long long)p.ios, (unsigned long long)p.errors, (unsigned long long)p.bytes, p.seconds,
      double(p.ios) / secs, double(p.bytes) / secs / 1e6, p.latency.quantile(0.50) / 1e3, p.latency.quantile(0.99) / 1e3,
      p.latency.quantile(0.999) / 1e3, p.latency.mean() / 1e3, double(p.latency.min()) / 1e3, double(p.latency.max()) / 1e3,
      p.frontendCpuUs, p.backendCpuUs, (unsigned long long)p.kicks, (unsigned long long)p.kickSkips, (unsigned long long)p.calls,
      (unsigned long long)p.verifiedBytes, (unsigned long long)p.mismatches,
      p.firstMismatch.empty() ? "null" : jsonString(p.firstMismatch).c_str(), p.firstError.empty() ? "null" : jsonString(p.firstError).c_str(),
      per.c_str());
}

template <typename T>
std::string jsonArray(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += format("%s%llu", i ? "," : "", (unsigned long long)v[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Options o;
  try {
    if (!parseOptions(argc, argv, o)) {
      fputs(usage(), stdout);
      return 0;
    }
  } catch (const Fatal& e) {
    fprintf(stderr, "vhost-bench: %s\n", e.what());
    printf("{\"error\":%s}\n", jsonString(e.what()).c_str());
    return 2;
  }
  std::string config = format(
      "\"proto\":\"%s\",\"rw\":\"%s\",\"verify\":\"%s\",\"bsMin\":%u,\"bsMax\":%u,\"qd\":%u,\"targets\":%zu,\"eventIdx\":%s,"
      "\"poll\":%s,\"indirect\":%s",
      o.proto == Proto::Scsi ? "scsi" : "blk", workloadName(o.workload), verifyName(o.verify), o.bsMin, o.bsMax, o.qd,
      o.proto == Proto::Scsi ? o.luns.size() : o.sockets.size(), o.eventIdx ? "true" : "false", o.poll ? "true" : "false",
      o.indirect ? "true" : "false");
  try {
    Bench bench(o);
    bench.setup();
    auto phases = bench.run();
    std::string problems = bench.shutdown();
    const PhaseResult& main = phases.back();
    uint64_t errors = 0, mismatches = 0;
    std::string phasesJson = "[";
    for (size_t i = 0; i < phases.size(); i++) {
      errors += phases[i].errors;
      mismatches += phases[i].mismatches;
      phasesJson += (i ? "," : "") + phaseJson(phases[i]);
    }
    phasesJson += "]";
    const DeviceInfo& d = bench.info();
    std::string mainJson = phaseJson(main);  // {"name":...}
    printf("{%s,%s,\"totalErrors\":%llu,\"totalMismatches\":%llu,\"shutdownProblems\":%s,\"features\":%s,"
           "\"protocolFeatures\":%s,\"queueNums\":%s,\"ringSizes\":%s,\"capacity\":%s,\"phases\":%s}\n",
           config.c_str(), mainJson.substr(1, mainJson.size() - 2).c_str(), (unsigned long long)errors,
           (unsigned long long)mismatches, problems.empty() ? "null" : jsonString(problems).c_str(), jsonArray(d.features).c_str(),
           jsonArray(d.protocolFeatures).c_str(), jsonArray(d.queueNums).c_str(), jsonArray(d.ringSizes).c_str(),
           jsonArray(d.capacity).c_str(), phasesJson.c_str());
    if (!problems.empty()) fprintf(stderr, "vhost-bench: %s\n", problems.c_str());
    return errors || mismatches || !problems.empty() ? 1 : 0;
  } catch (const Fatal& e) {
    fprintf(stderr, "vhost-bench: %s\n", e.what());
    printf("{%s,\"error\":%s}\n", config.c_str(), jsonString(e.what()).c_str());
    return 2;
  }
}
