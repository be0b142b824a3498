/*
 * kafka-mock: a throwaway Kafka cluster for Parley's integration tests, built on librdkafka's mock
 * cluster (rdkafka_mock.h). It speaks enough of the Kafka protocol for producers (plain,
 * idempotent, transactional), consumers and consumer groups, keeps everything in memory, and
 * listens on 127.0.0.1 only, on ephemeral ports.
 *
 *   kafka-mock [--brokers N] [--partitions N] [--topic NAME]... [--bootstrap-file PATH]
 *
 * It prints the bootstrap list ("127.0.0.1:40001,127.0.0.1:40002,...") as one line on stdout and,
 * with --bootstrap-file, writes it to PATH (via PATH.tmp and rename, so a waiting script never
 * reads half of it; the file is removed again on exit). Then it waits for signals:
 *
 *   SIGUSR1          every broker down (connections closed, new ones refused); prints "brokers down"
 *   SIGUSR2          every broker up again; prints "brokers up"
 *   SIGTERM, SIGINT  destroys the cluster and exits 0
 *
 * Topics are created automatically on first use (a producer's Metadata request). librdkafka 2.0.2
 * gives such topics 4 partitions and offers no way to change that, so --partitions applies to the
 * topics named with --topic, which are created up front.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -o kafka-mock kafka-mock.c -lrdkafka
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64

static void usage(FILE *out) {
    fprintf(out,
            "usage: kafka-mock [--brokers N] [--partitions N] [--topic NAME]... "
            "[--bootstrap-file PATH]\n"
            "  --brokers N            number of brokers, ids 1..N (default 3)\n"
            "  --partitions N         partitions of each --topic (default 4, as auto-created "
            "topics get)\n"
            "  --topic NAME           create NAME up front; repeatable\n"
            "  --bootstrap-file PATH  also write the bootstrap list to PATH (atomically)\n"
            "signals: SIGUSR1 all brokers down, SIGUSR2 all brokers up, SIGTERM/SIGINT exit\n");
}

/* Parses a positive int option value, or exits with a usage error. */
static int parse_count(const char *opt, const char *value, int max) {
    char *end;
    long n;

    errno = 0;
    n     = strtol(value, &end, 10);
    if (errno || end == value || *end || n < 1 || n > max) {
        fprintf(stderr, "kafka-mock: %s wants a number from 1 to %d, got \"%s\"\n", opt, max,
                value);
        exit(2);
    }
    return (int)n;
}

/* Writes the bootstrap list to path.tmp and renames it over path: rename is atomic, so a script
 * polling for path sees either nothing or the whole line. */
static int write_bootstrap_file(const char *path, const char *bootstraps) {
    char tmp[PATH_MAX];
    FILE *f;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, "kafka-mock: bootstrap file path too long\n");
        return -1;
    }
    if (!(f = fopen(tmp, "w"))) {
        fprintf(stderr, "kafka-mock: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    if (fprintf(f, "%s\n", bootstraps) < 0 || fclose(f) != 0) {
        fprintf(stderr, "kafka-mock: writing %s: %s\n", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "kafka-mock: rename %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Sets every broker down or up, one id at a time so a failure names the broker. "Down" closes the
 * broker's connections and refuses new ones but keeps its port; it does not move partition
 * leaders, so clients simply retry until the brokers are back. */
static void set_brokers(rd_kafka_mock_cluster_t *mcluster, int brokers, int up) {
    for (int id = 1; id <= brokers; id++) {
        rd_kafka_resp_err_t err = up ? rd_kafka_mock_broker_set_up(mcluster, id)
                                     : rd_kafka_mock_broker_set_down(mcluster, id);
        if (err)
            fprintf(stderr, "kafka-mock: broker %d %s: %s\n", id, up ? "up" : "down",
                    rd_kafka_err2str(err));
    }
    printf("brokers %s\n", up ? "up" : "down");
    fflush(stdout);
}

int main(int argc, char **argv) {
    int brokers                = 3;
    int partitions             = 4;
    const char *bootstrap_file = NULL;
    const char *topics[MAX_TOPICS];
    int topic_cnt = 0;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *value = argv[++i];
        if (!strcmp(opt, "--brokers")) {
            brokers = parse_count(opt, value, 64);
        } else if (!strcmp(opt, "--partitions")) {
            partitions = parse_count(opt, value, 10000);
        } else if (!strcmp(opt, "--bootstrap-file")) {
            bootstrap_file = value;
        } else if (!strcmp(opt, "--topic")) {
            if (topic_cnt == MAX_TOPICS) {
                fprintf(stderr, "kafka-mock: at most %d --topic options\n", MAX_TOPICS);
                return 2;
            }
            topics[topic_cnt++] = value;
        } else {
            usage(stderr);
            return 2;
        }
    }

    /* Block the signals we handle before librdkafka starts any thread: threads inherit the mask, so
     * every one of these signals stays pending until sigwait() below takes it in this thread.
     * Without this a SIGUSR1 could land on a librdkafka thread and kill the process. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    int rc = pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (rc != 0) {
        fprintf(stderr, "kafka-mock: pthread_sigmask: %s\n", strerror(rc));
        return 1;
    }

    /* The mock cluster lives on an rd_kafka_t of its own. A producer without bootstrap.servers
     * never connects anywhere; it only hosts the cluster's thread and bookkeeping. */
    char errstr[512];
    /* log_level 4 (warning) hides the notice that this handle has no bootstrap.servers, which is
     * the point here, while real warnings and errors still reach stderr. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "client.id", "kafka-mock", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-mock: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka-mock: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf); /* rd_kafka_new only takes ownership on success */
        return 1;
    }

    rd_kafka_mock_cluster_t *mcluster = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mcluster) {
        fprintf(stderr, "kafka-mock: could not create a mock cluster of %d brokers\n", brokers);
        rd_kafka_destroy(rk);
        return 1;
    }

    int status = 0;
    /* The mock assigns min(3, brokers) replicas to every partition whatever factor is asked for;
     * pass the same so the request matches what it does. */
    int replication = brokers < 3 ? brokers : 3;
    for (int i = 0; i < topic_cnt && status == 0; i++) {
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mcluster, topics[i], partitions, replication);
        if (err) {
            fprintf(stderr, "kafka-mock: topic %s: %s\n", topics[i], rd_kafka_err2str(err));
            status = 1;
        }
    }

    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
    if (status == 0 && bootstrap_file && write_bootstrap_file(bootstrap_file, bootstraps) != 0)
        status = 1;

    if (status == 0) {
        printf("%s\n", bootstraps);
        fflush(stdout);
    }

    while (status == 0) {
        int sig;
        rc = sigwait(&sigs, &sig);
        if (rc != 0) {
            fprintf(stderr, "kafka-mock: sigwait: %s\n", strerror(rc));
            status = 1;
        } else if (sig == SIGUSR1) {
            set_brokers(mcluster, brokers, 0);
        } else if (sig == SIGUSR2) {
            set_brokers(mcluster, brokers, 1);
        } else {
            break; /* SIGTERM or SIGINT: a clean shutdown */
        }
    }

    /* A bootstrap file left behind would point a later script at ports nobody listens on. */
    if (bootstrap_file)
        unlink(bootstrap_file);
    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(rk);
    return status;
}
