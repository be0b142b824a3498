// librdkafka's C API (Debian: librdkafka-dev), imported only by builds with the `Kafka` trait.
#include <librdkafka/rdkafka.h>
