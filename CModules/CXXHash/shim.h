// Debian's libxxhash (libxxhash-dev): the XXH3 hash of shared-state tensors.
#include <xxhash.h>
