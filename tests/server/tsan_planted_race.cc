// Checks that scripts/tsan.supp does not hide the project's own races (built only with
// ATTNSERVE_SANITIZE=thread). Each mode plants one unsynchronised counter where the server's code
// runs and drives it from several threads; ctest expects ThreadSanitizer to report a data race:
//   handler  — incremented in an RPC's body, run as the service runs them: a callback method
//              hands it to RequestThreads, which finish the call (the path that the gRPC entries
//              of the suppression file are closest to), called by 4 clients at once;
//   compute  — incremented in work run on a ComputePool with 4 workers (the project's threads).
// Exit status 0 without a report means the suppressions (or the build) hide real races.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "attnserve/v1/attention_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/requests/compute_pool.h"
#include "server/rpc/request_threads.h"

namespace attnserve {
namespace {

constexpr int kThreads = 4;
constexpr int kCallsPerThread = 50;

// The service's path (AttentionServiceImpl): a callback method hands its body to RequestThreads,
// which finishes the call.
class RacyService final : public v1::AttentionService::CallbackService {
 public:
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest*,
                                       v1::ListModelsResponse*) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const bool scheduled = threads_.TrySchedule([this, reactor] {
      ++calls_;  // the planted race: no lock, several request threads
      reactor->Finish(grpc::Status::OK);
    });
    if (!scheduled) reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, ""));
    return reactor;
  }

 private:
  int calls_ = 0;
  RequestThreads threads_{{}};
};

int RaceInHandler() {
  RacyService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "cannot start the gRPC server\n");
    return 2;
  }
  auto stub = v1::AttentionService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&stub] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        grpc::ClientContext context;
        v1::ListModelsResponse response;
        stub->ListModels(&context, v1::ListModelsRequest(), &response);
      }
    });
  }
  for (std::thread& client : clients) client.join();
  server->Shutdown();
  return 0;
}

int RaceInComputation() {
  ComputePool pool(kThreads, kThreads * kCallsPerThread);
  int computations = 0;
  std::vector<std::thread> callers;
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&pool, &computations] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        pool.Run(std::chrono::system_clock::now() + std::chrono::seconds(30), nullptr, [&] {
          // Long enough for the workers' tasks to overlap: the pool's lock orders an increment
          // before every task taken after it, so only overlapping ones race.
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          ++computations;  // the planted race: no lock, several workers
          return absl::OkStatus();
        }).IgnoreError();
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  return 0;
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "handler") == 0) return attnserve::RaceInHandler();
  if (argc == 2 && std::strcmp(argv[1], "compute") == 0) return attnserve::RaceInComputation();
  std::fprintf(stderr, "usage: %s handler|compute\n", argv[0]);
  return 2;
}
