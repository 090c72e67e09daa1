#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "util/util.h"

static void test_err_set_appends_strerror(void **state)
{
	(void)state;
	struct hm_err err = {0};
	assert_int_equal(hm_err_set(&err, ENOENT, "open %s", "/x"), -1);
	assert_int_equal(err.code, ENOENT);
	assert_string_equal(err.msg, "open /x: No such file or directory");
	hm_err_prefix(&err, "rootfs");
	assert_string_equal(err.msg, "rootfs: open /x: No such file or directory");
}

static void test_err_prefix_truncates_safely(void **state)
{
	(void)state;
	struct hm_err err = {0};
	char big[3000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	hm_err_set(&err, 0, "%s", big);
	hm_err_prefix(&err, "%s", big);
	assert_int_equal(strlen(err.msg), HM_ERR_MSG_MAX - 1);
}

static void test_parse_size(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(hm_parse_size("64M", &v), 0);
	assert_int_equal(v, 64ULL << 20);
	assert_int_equal(hm_parse_size("1g", &v), 0);
	assert_int_equal(v, 1ULL << 30);
	assert_int_equal(hm_parse_size("512KiB", &v), 0);
	assert_int_equal(v, 512ULL << 10);
	assert_int_equal(hm_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_true(hm_parse_size("-1", &v) < 0);
	assert_true(hm_parse_size("abc", &v) < 0);
	assert_true(hm_parse_size("12X", &v) < 0);
	assert_true(hm_parse_size("", &v) < 0);
	assert_true(hm_parse_size("99999999999999999999G", &v) < 0);
	assert_true(hm_parse_u64("12a", &v) < 0);
	assert_true(hm_parse_u64(" -5", &v) < 0);
	assert_true(hm_parse_size(" 5", &v) < 0);
	assert_int_equal(hm_parse_u64("42", &v), 0);
	assert_int_equal(v, 42);
}

static void test_files_and_rm_rf(void **state)
{
	(void)state;
	struct hm_err err = {0};
	char tmpl[] = "/tmp/hm-util-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	char path[4096];
	snprintf(path, sizeof(path), "%s/a/b/c", tmpl);
	assert_int_equal(hm_mkdir_p(path, 0755, &err), 0);
	snprintf(path, sizeof(path), "%s/a/b/c/f", tmpl);
	assert_int_equal(hm_create_file(path, "hello", 5, 0600, &err), 0);
	hm_autofree char *data = NULL;
	size_t len = 0;
	assert_int_equal(hm_read_file(path, &data, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_string_equal(data, "hello");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(hm_rm_rf(tmpl, &err), 0);
	assert_int_equal(stat(tmpl, &st), -1);
	assert_int_equal(hm_rm_rf(tmpl, &err), 0); /* missing is success */
	assert_true(hm_read_file(path, (char **)&data, &len, &err) < 0);
	assert_int_equal(err.code, ENOENT);
}

static void test_read_fd_bounded(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "0123456789", 10), 10);
	close(p[1]);
	struct hm_err err = {0};
	char *out = NULL;
	size_t len = 0;
	assert_true(hm_read_fd(p[0], 0, 9, "pipe", &out, &len, &err) < 0);
	assert_int_equal(err.code, EFBIG);
	assert_null(out);
	close(p[0]);

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "0123456789", 10), 10);
	close(p[1]);
	assert_int_equal(hm_read_fd(p[0], 3, 10, "pipe", &out, &len, &err), 0);
	assert_int_equal(len, 10);
	assert_string_equal(out, "0123456789");
	free(out);
	close(p[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_err_set_appends_strerror),
		cmocka_unit_test(test_err_prefix_truncates_safely),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_files_and_rm_rf),
		cmocka_unit_test(test_read_fd_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
