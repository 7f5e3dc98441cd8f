// Host bytes copied to the device without waiting for the stream. A copy from pageable memory is staged by the
// driver, and one larger than its staging buffer waits until the stream reaches it: the tokens' upload at the
// start of a train step (256 KB for the char config, 1 MB for copy) would then wait for the previous step's
// backward and optimizer, and the GPU would drain while the host did the rest of the step's launches. So the
// bytes go into pinned memory first (a host memcpy), and the copy engine reads them from there in stream order.
#pragma once
#include <cstddef>

namespace rt::cuda {

// Queues a copy of `bytes` from host `src` to device `dst` on stream(); `src` may be reused at once.
void upload_async(void* dst, const void* src, size_t bytes);

}  // namespace rt::cuda
