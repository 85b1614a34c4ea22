// The umbrella header: everything in sluice's public API.
#pragma once

#include <sluice/chan.hpp>
#include <sluice/clock.hpp>
#include <sluice/concurrency_limiter.hpp>
#include <sluice/context.hpp>
#include <sluice/errgroup.hpp>
#include <sluice/error.hpp>
#include <sluice/fan.hpp>
#include <sluice/introspection.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/mutex.hpp>
#include <sluice/once.hpp>
#include <sluice/pipeline.hpp>
#include <sluice/pubsub.hpp>
#include <sluice/rate.hpp>
#include <sluice/retry.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/semaphore.hpp>
#include <sluice/sharded_map.hpp>
#include <sluice/singleflight.hpp>
#include <sluice/stats.hpp>
#include <sluice/task.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>
#include <sluice/worker_pool.hpp>
