/*
 * pgclient: the benchmark's libpq client (test/bench/run.sh).
 *
 *   pgclient commits CONNINFO N SQL
 *       Runs SQL N times, each in its own (autocommit) transaction, one right
 *       after the other.  "%d" in SQL is replaced by the iteration (1..N).
 *       After each PQexec returns (the COMMIT is done and acknowledged),
 *       prints "i epoch_seconds" with the client's CLOCK_REALTIME, the same
 *       clock the receiver stamps arrivals with.
 *
 *   pgclient stream CONNINFO INTERVAL_MS SQL
 *       Runs SQL every INTERVAL_MS ms ("%d" = iteration) until killed
 *       (SIGTERM/SIGINT); prints the number of statements run at exit.
 *
 *   pgclient trickle CONNINFO INTERVAL_MS SQL
 *       Like stream, but prints "i epoch_seconds" after each commit, as
 *       commits does (line-buffered, so the caller may read as it goes).
 *
 *   pgclient time CONNINFO SQL
 *       Runs SQL once and prints the elapsed wall time in ms (commit included).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static volatile sig_atomic_t stop = 0;

static void
on_signal(int sig)
{
	(void) sig;
	stop = 1;
}

static double
now_s(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
run(PGconn *conn, const char *tmpl, int i)
{
	char		sql[8192];
	PGresult   *res;
	ExecStatusType st;

	snprintf(sql, sizeof(sql), tmpl, i, i, i, i);
	res = PQexec(conn, sql);
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "pgclient: %s", PQerrorMessage(conn));
		exit(1);
	}
	PQclear(res);
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;

	if (argc < 4)
	{
		fprintf(stderr, "usage: pgclient commits|stream|trickle|time CONNINFO ...\n");
		return 2;
	}
	conn = PQconnectdb(argv[2]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "pgclient: %s", PQerrorMessage(conn));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (strcmp(argv[1], "commits") == 0 && argc == 5)
	{
		int			n = atoi(argv[3]);
		double	   *t = malloc(sizeof(double) * (n + 1));

		for (int i = 1; i <= n; i++)
		{
			run(conn, argv[4], i);
			t[i] = now_s(CLOCK_REALTIME);
		}
		for (int i = 1; i <= n; i++)
			printf("%d %.6f\n", i, t[i]);
	}
	else if ((strcmp(argv[1], "stream") == 0 || strcmp(argv[1], "trickle") == 0) && argc == 5)
	{
		int			interval_ms = atoi(argv[3]);
		int			i = 0;
		double		next = now_s(CLOCK_MONOTONIC);
		int			stamps = (strcmp(argv[1], "trickle") == 0);

		signal(SIGTERM, on_signal);
		signal(SIGINT, on_signal);
		while (!stop)
		{
			double		left;

			run(conn, argv[4], ++i);
			if (stamps)
				printf("%d %.6f\n", i, now_s(CLOCK_REALTIME));
			next += interval_ms / 1000.0;
			left = next - now_s(CLOCK_MONOTONIC);
			if (left > 0)
				usleep((useconds_t) (left * 1e6));
		}
		if (!stamps)
			printf("%d\n", i);
	}
	else if (strcmp(argv[1], "time") == 0 && argc == 4)
	{
		double		t0 = now_s(CLOCK_MONOTONIC);

		run(conn, argv[3], 0);
		printf("%.3f\n", (now_s(CLOCK_MONOTONIC) - t0) * 1000);
	}
	else
	{
		fprintf(stderr, "pgclient: bad arguments\n");
		return 2;
	}
	PQfinish(conn);
	return 0;
}
