--
-- PostgreSQL database dump
--

\restrict I3fZStZ3uqbJGgObAOY6EBJhORx9His6nItdR0g88ujIVjJno4akdc1Rni8EYWw

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: __SCHEMA__; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA __SCHEMA__;


--
-- Name: promises_settled_never_change(); Type: FUNCTION; Schema: __SCHEMA__; Owner: -
--

CREATE FUNCTION __SCHEMA__.promises_settled_never_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'invariant violated: a settled promise never changes'; END $$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: promise_tags; Type: TABLE; Schema: __SCHEMA__; Owner: -
--

CREATE TABLE __SCHEMA__.promise_tags (
    seq bigint NOT NULL,
    key character varying NOT NULL,
    value character varying NOT NULL
);


--
-- Name: promises; Type: TABLE; Schema: __SCHEMA__; Owner: -
--

CREATE TABLE __SCHEMA__.promises (
    seq bigint NOT NULL,
    id character varying NOT NULL,
    state character varying NOT NULL,
    timer boolean NOT NULL,
    param_headers character varying,
    param_data character varying,
    value_headers character varying,
    value_data character varying,
    timeout_at bigint NOT NULL,
    tags character varying,
    ikey_create character varying,
    ikey_settle character varying,
    created_at bigint NOT NULL,
    settled_at bigint
);


--
-- Name: promises_seq_seq; Type: SEQUENCE; Schema: __SCHEMA__; Owner: -
--

CREATE SEQUENCE __SCHEMA__.promises_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: promises_seq_seq; Type: SEQUENCE OWNED BY; Schema: __SCHEMA__; Owner: -
--

ALTER SEQUENCE __SCHEMA__.promises_seq_seq OWNED BY __SCHEMA__.promises.seq;


--
-- Name: schedules; Type: TABLE; Schema: __SCHEMA__; Owner: -
--

CREATE TABLE __SCHEMA__.schedules (
    id character varying NOT NULL,
    cron character varying NOT NULL,
    timezone character varying NOT NULL,
    fn character varying NOT NULL,
    args character varying NOT NULL,
    state character varying NOT NULL,
    next_fire_at bigint NOT NULL,
    created_at bigint NOT NULL
);


--
-- Name: tasks; Type: TABLE; Schema: __SCHEMA__; Owner: -
--

CREATE TABLE __SCHEMA__.tasks (
    id character varying NOT NULL,
    state character varying NOT NULL,
    ready_at bigint NOT NULL,
    waiting_on character varying,
    owner character varying,
    owner_host character varying,
    owner_pid integer,
    lease_expires_at bigint,
    counter bigint NOT NULL,
    attempts integer NOT NULL,
    step_id character varying,
    step_attempt integer NOT NULL,
    progress character varying,
    updated_at bigint NOT NULL
);


--
-- Name: promises seq; Type: DEFAULT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.promises ALTER COLUMN seq SET DEFAULT nextval('__SCHEMA__.promises_seq_seq'::regclass);


--
-- Data for Name: promise_tags; Type: TABLE DATA; Schema: __SCHEMA__; Owner: -
--

COPY __SCHEMA__.promise_tags (seq, key, value) FROM stdin;
1	promises:job	tests.squares
2	promises:job	tests.fails
3	promises:job	tests.sleeper
4	promises:job	approval
5	promises:job	sleep
6	promises:timer	true
11	promises:timer	true
12	promises:job	tests.squares
13	promises:timer	true
13	agent_tools	timer
\.


--
-- Data for Name: promises; Type: TABLE DATA; Schema: __SCHEMA__; Owner: -
--

COPY __SCHEMA__.promises (seq, id, state, timer, param_headers, param_data, value_headers, value_data, timeout_at, tags, ikey_create, ikey_settle, created_at, settled_at) FROM stdin;
3	v1-sleeping	pending	f	\N	{"fn":"tests.sleeper","args":[600],"kwargs":{}}	\N	\N	1800003600000	{"promises:job":"tests.sleeper"}	cc79c4afea60cd1050e8940d35130f1e	\N	1800000000000	\N
4	v1-approval	pending	f	\N	{"fn":"approval","args":[],"kwargs":{"question":"Ship it?","deadline_hours":48}}	\N	\N	1800003600000	{"promises:job":"approval"}	7c81f742863540df87afd45b42dccd7f	\N	1800000000000	\N
5	v1-sleep	pending	f	\N	{"fn":"sleep","args":[],"kwargs":{"seconds":7200}}	\N	\N	1800003600000	{"promises:job":"sleep"}	a559ac742965e07e622590da5bd11c56	\N	1800000000000	\N
6	v1-sleep.0	pending	t	{"promises:step":"sleep"}	\N	\N	\N	1800007200000	{"promises:timer":"true"}	v1-sleep.0	\N	1800000000000	\N
9	v1-approval.0	pending	f	{"promises:step":"promise"}	{"question":"Ship it?","details":null}	\N	\N	1800172800000	\N	v1-approval.0	\N	1800000000000	\N
2	v1-failed	rejected	f	\N	{"fn":"tests.fails","args":["boom"],"kwargs":{}}	\N	{"type":"ValueError","message":"boom","retryable":false}	1800003600000	{"promises:job":"tests.fails"}	86d86e8f5e4ff0e8549eb53c0ca8ec9d	v1-failed:done	1800000000000	1800000000000
7	v1-sleeping.0	resolved	f	{"promises:step":"tests.durable_jobs:wall_ms"}	\N	{"attempts":"1"}	1795324427929	1800003600000	\N	v1-sleeping.0	v1-sleeping.0	1800000000000	1800000000000
8	v1-done.0	resolved	f	{"promises:step":"tests.durable_jobs:square"}	\N	{"attempts":"1"}	0	1800003600000	\N	v1-done.0	v1-done.0	1800000000000	1800000000000
11	v1-sleeping.1	pending	t	{"promises:step":"sleep"}	\N	\N	\N	1800000600000	{"promises:timer":"true"}	v1-sleeping.1	\N	1800000000000	\N
10	v1-done.1	resolved	f	{"promises:step":"tests.durable_jobs:square"}	\N	{"attempts":"1"}	1	1800003600000	\N	v1-done.1	v1-done.1	1800000000000	1800000000000
1	v1-done	resolved	f	\N	{"fn":"tests.squares","args":[2],"kwargs":{}}	\N	[0,1]	1800003600000	{"promises:job":"tests.squares"}	14bb70050a4bbcc1893835423f962c94	v1-done:done	1800000000000	1800000000000
12	v1-ready	pending	f	\N	{"fn":"tests.squares","args":[3],"kwargs":{}}	\N	\N	1800003600000	{"promises:job":"tests.squares"}	2ff6c390bfff369b22cbee60ba3fac45	\N	1800000000000	\N
13	v1-timer	pending	t	\N	\N	\N	\N	1800000600000	{"agent_tools":"timer","promises:timer":"true"}	timer@1800000600000	\N	1800000000000	\N
\.


--
-- Data for Name: schedules; Type: TABLE DATA; Schema: __SCHEMA__; Owner: -
--

COPY __SCHEMA__.schedules (id, cron, timezone, fn, args, state, next_fire_at, created_at) FROM stdin;
v1-cron	*/5 * * * *	UTC	tests.squares	{"args":[],"kwargs":{"n":1}}	active	1800000300000	1800000000000
\.


--
-- Data for Name: tasks; Type: TABLE DATA; Schema: __SCHEMA__; Owner: -
--

COPY __SCHEMA__.tasks (id, state, ready_at, waiting_on, owner, owner_host, owner_pid, lease_expires_at, counter, attempts, step_id, step_attempt, progress, updated_at) FROM stdin;
v1-failed	done	1800000000000	\N	\N	vm	10144	\N	1	1	\N	0	\N	1800000000000
v1-sleep	ready	1800007200000	v1-sleep.0	\N	vm	10144	\N	1	1	\N	0	\N	1800000000000
v1-approval	ready	1800172800000	v1-approval.0	\N	vm	10144	\N	1	1	\N	0	\N	1800000000000
v1-sleeping	ready	1800000600000	v1-sleeping.1	\N	vm	10144	\N	1	1	\N	0	\N	1800000000000
v1-done	done	1800000000000	\N	\N	vm	10144	\N	1	1	\N	0	\N	1800000000000
v1-ready	ready	1800000000000	\N	\N	\N	\N	\N	0	0	\N	0	\N	1800000000000
\.


--
-- Name: promises_seq_seq; Type: SEQUENCE SET; Schema: __SCHEMA__; Owner: -
--

SELECT pg_catalog.setval('__SCHEMA__.promises_seq_seq', 13, true);


--
-- Name: promise_tags promise_tags_pkey; Type: CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.promise_tags
    ADD CONSTRAINT promise_tags_pkey PRIMARY KEY (seq, key);


--
-- Name: promises promises_id_key; Type: CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.promises
    ADD CONSTRAINT promises_id_key UNIQUE (id);


--
-- Name: promises promises_pkey; Type: CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.promises
    ADD CONSTRAINT promises_pkey PRIMARY KEY (seq);


--
-- Name: schedules schedules_pkey; Type: CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (id);


--
-- Name: tasks tasks_pkey; Type: CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);


--
-- Name: ix_promise_tags_key_value_seq; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_promise_tags_key_value_seq ON __SCHEMA__.promise_tags USING btree (key, value, seq);


--
-- Name: ix_promises_settled_at; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_promises_settled_at ON __SCHEMA__.promises USING btree (settled_at);


--
-- Name: ix_promises_state_seq; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_promises_state_seq ON __SCHEMA__.promises USING btree (state, seq);


--
-- Name: ix_promises_state_timeout; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_promises_state_timeout ON __SCHEMA__.promises USING btree (state, timeout_at);


--
-- Name: ix_schedules_next_fire; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_schedules_next_fire ON __SCHEMA__.schedules USING btree (state, next_fire_at);


--
-- Name: ix_tasks_state_lease; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_tasks_state_lease ON __SCHEMA__.tasks USING btree (state, lease_expires_at);


--
-- Name: ix_tasks_state_ready_at; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_tasks_state_ready_at ON __SCHEMA__.tasks USING btree (state, ready_at);


--
-- Name: ix_tasks_waiting_on; Type: INDEX; Schema: __SCHEMA__; Owner: -
--

CREATE INDEX ix_tasks_waiting_on ON __SCHEMA__.tasks USING btree (waiting_on);


--
-- Name: promises promises_settled_never_change; Type: TRIGGER; Schema: __SCHEMA__; Owner: -
--

CREATE TRIGGER promises_settled_never_change BEFORE UPDATE ON __SCHEMA__.promises FOR EACH ROW WHEN (((old.state)::text <> 'pending'::text)) EXECUTE FUNCTION __SCHEMA__.promises_settled_never_change();


--
-- Name: promise_tags promise_tags_seq_fkey; Type: FK CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.promise_tags
    ADD CONSTRAINT promise_tags_seq_fkey FOREIGN KEY (seq) REFERENCES __SCHEMA__.promises(seq) ON DELETE CASCADE;


--
-- Name: tasks tasks_id_fkey; Type: FK CONSTRAINT; Schema: __SCHEMA__; Owner: -
--

ALTER TABLE ONLY __SCHEMA__.tasks
    ADD CONSTRAINT tasks_id_fkey FOREIGN KEY (id) REFERENCES __SCHEMA__.promises(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

\unrestrict I3fZStZ3uqbJGgObAOY6EBJhORx9His6nItdR0g88ujIVjJno4akdc1Rni8EYWw

