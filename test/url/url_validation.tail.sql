-- what each status's reason says
CREATE TEMP TABLE reason_patterns (status text, pattern text);
INSERT INTO reason_patterns VALUES
    ('WH_URL_EMPTY', '^URL is empty'),
    ('WH_URL_TOO_LONG', '^URL is longer than 2048 characters'),
    ('WH_URL_BAD_CHARACTERS', '^URL contains whitespace, control or non-ASCII characters'),
    ('WH_URL_MALFORMED', '^URL is not a valid absolute URL'),
    ('WH_URL_NOT_HTTPS', '^URL scheme must be https'),
    ('WH_URL_NO_HOST', '^URL has no host'),
    ('WH_URL_CREDENTIALS', '^URL must not contain a user name or password'),
    ('WH_URL_BAD_PORT', '^URL port must be between 1 and 65535'),
    ('WH_URL_FRAGMENT', '^URL must not contain a fragment'),
    ('WH_URL_LOCAL_NAME', 'refers to the local machine'),
    ('WH_URL_METADATA', 'is a cloud metadata (address|name)'),
    ('WH_URL_PRIVATE_ADDRESS', '^host .* is an? [a-zA-Z0-9 -]*(address|range)');

SELECT expected, count(*) FROM bad_urls GROUP BY 1 ORDER BY 1;

-- every bad URL is rejected, and for the right reason (expect no rows)
SELECT b.n, b.expected, b.url, webhooks.url_problem(b.url, false) AS reason
  FROM bad_urls b JOIN reason_patterns p ON p.status = b.expected
 WHERE webhooks.url_problem(b.url, false) IS NULL
    OR webhooks.url_problem(b.url, false) !~ p.pattern
 ORDER BY b.n;

-- the reasons, as a user reads them
SELECT n, url, webhooks.url_problem(url, false) AS reason FROM bad_urls ORDER BY n;

-- every good URL is accepted (expect no rows)
SELECT n, url, webhooks.url_problem(url, false) FROM good_urls
 WHERE webhooks.url_problem(url, false) IS NOT NULL ORDER BY n;

-- over-long URLs
SELECT webhooks.url_problem('https://example.com/' || repeat('a', 2028)) AS at_limit,
       webhooks.url_problem('https://example.com/' || repeat('a', 2029)) AS over_limit;

-- allow_private opens loopback and private ranges, never cloud metadata
SELECT url, webhooks.url_problem(url, true) AS with_allow_private
  FROM (VALUES ('https://127.0.0.1:8443/ok'), ('https://localhost/'), ('https://10.1.2.3/'),
               ('https://[::1]/'), ('https://169.254.169.254/'), ('https://metadata.google.internal/'),
               ('https://[fd00:ec2::254]/'), ('https://[::ffff:169.254.169.254]/')) v(url);

-- the setting is the default when allow_private is not given
SELECT webhooks.url_problem('https://127.0.0.1/') AS default_is_setting;
